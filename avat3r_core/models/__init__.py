"""Third-party networks (BackgroundMattingV2, DUSt3R, Sapiens) and their checkpoint loading."""

"""Per-pixel 3D positions of the input views: DUSt3R with known cameras, or the tracked mesh."""

"""avat3r: dataset build, training and evaluation pipeline for the Avat3r head-avatar model."""

__version__ = "0.1.0"

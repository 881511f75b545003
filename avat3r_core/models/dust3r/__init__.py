"""DUSt3R (naver/dust3r) re-implemented in plain PyTorch with checkpoint-compatible key names.

Used to predict pairwise pointmaps for the dataset build; see :func:`load_dust3r` and :func:`predict_pairs`.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_dust3r, random_dust3r, write_random_dust3r
from .inference import predict_pairs
from .network import AsymmetricCroCo3DStereo

__all__ = [
    "AsymmetricCroCo3DStereo",
    "CheckpointError",
    "load_dust3r",
    "predict_pairs",
    "random_dust3r",
    "write_random_dust3r",
]

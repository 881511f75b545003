"""Synthetic multi-view head capture in the exact on-disk layout of the Ava-256 4TB release, plus ground
truth.

The pipeline's Ava-256 reader is exercised for real on this capture, and every stage can be checked against
the true alpha, depth, cameras, head poses and blend weights written next to it. Modules, one job each:
config (the config and pure naming functions), head (procedural head, blendshapes, appearance), expression
(blend weights, segment trajectories, 256-d codes), timeline (frames, head motion, dropped images), dome
(cameras and background plates), shading (textures and light), render (one
camera of one subject), writer (the Ava-256 layout and the process pool).
"""

from __future__ import annotations

from .config import SyntheticConfig, image_size, synthetic_capture_folder, synthetic_subject_ids
from .expression import BLEND_WEIGHT_NAMES, decode_blend_weights
from .writer import generate_synthetic_capture

__all__ = [
    "BLEND_WEIGHT_NAMES",
    "SyntheticConfig",
    "decode_blend_weights",
    "generate_synthetic_capture",
    "image_size",
    "synthetic_capture_folder",
    "synthetic_subject_ids",
]

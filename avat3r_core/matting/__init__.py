"""Matting algorithms: pure compute on arrays; the matting stage does the capture and store I/O.

- `plate_difference`: classical matte against the camera's clean plate (no weights).
- `backends`: `make_matter(backend, options)`, the one interface the stage calls (plate_difference, bgmv2),
  and `mask_to_alpha` for the capture-shipped masks of the "dataset" backend.
- `composite`: background replaced by black (the recipe's foreground images) and alpha quantisation.
"""

from __future__ import annotations

from avat3r_core.matting.backends import BACKENDS, BGMV2_OPTIONS, Matter, make_matter, mask_to_alpha
from avat3r_core.matting.composite import COMPOSITE_MODES, alpha_to_uint8, composite_on_black
from avat3r_core.matting.plate_difference import (
    PlateDifferenceParams,
    foreground_mask,
    plate_difference_matte,
)

__all__ = [
    "BACKENDS",
    "BGMV2_OPTIONS",
    "COMPOSITE_MODES",
    "Matter",
    "PlateDifferenceParams",
    "alpha_to_uint8",
    "composite_on_black",
    "foreground_mask",
    "make_matter",
    "mask_to_alpha",
    "plate_difference_matte",
]

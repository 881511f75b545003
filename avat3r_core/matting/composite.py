"""Background replacement by black, the Avat3r recipe's foreground images, and alpha quantisation.

Rounding: every float -> uint8 conversion here is round-half-up of the value clipped to [0, 255]
(``floor(x + 0.5)``), so 0.5 levels is not at the mercy of numpy's round-half-to-even and a pixel with
alpha 1 keeps its exact source value.
"""

from __future__ import annotations

import numpy as np

COMPOSITE_MODES = ("src", "fgr")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 255] floats -> uint8 with round-half-up (see the module docstring)."""
    return np.floor(np.clip(values, 0.0, 255.0) + 0.5).astype(np.uint8)


def _check_alpha(alpha: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    alpha = np.asarray(alpha)
    if alpha.shape != shape:
        raise ValueError(f"alpha shape {alpha.shape} does not match the image's {shape}")
    if not np.issubdtype(alpha.dtype, np.floating):
        raise TypeError(f"alpha must be floating point in [0, 1], got {alpha.dtype} (see alpha_to_uint8)")
    return np.clip(alpha.astype(np.float32, copy=False), 0.0, 1.0)


def composite_on_black(
    image: np.ndarray, alpha: np.ndarray, foreground: np.ndarray | None = None, mode: str = "src"
) -> np.ndarray:
    """The subject over black, uint8 with the image's shape (H, W, 3) or (N, H, W, 3).

    mode "src": image * alpha. Exact where alpha is 0 or 1; at fractional edges the plate's colour stays
    mixed in (dimmed), which is what a matte without a foreground estimate can offer.
    mode "fgr": foreground * alpha, with `foreground` float in [0, 1] (BGMv2's predicted foreground colour,
    which has the background colour removed from edge pixels); required in this mode.
    Alpha is clipped to [0, 1]; rounding is round-half-up.
    """
    if mode not in COMPOSITE_MODES:
        raise ValueError(f"composite mode {mode!r} not in {COMPOSITE_MODES}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3) or (N, H, W, 3), got {image.dtype} {image.shape}")
    a = _check_alpha(alpha, image.shape[:-1])[..., None]
    if mode == "src":
        return _to_uint8(image.astype(np.float32) * a)
    if foreground is None:
        raise ValueError("composite mode 'fgr' needs the predicted foreground (the backend provides none)")
    foreground = np.asarray(foreground)
    if foreground.shape != image.shape:
        raise ValueError(f"foreground shape {foreground.shape} does not match the image's {image.shape}")
    if not np.issubdtype(foreground.dtype, np.floating):
        raise TypeError(f"foreground must be floating point in [0, 1], got {foreground.dtype}")
    return _to_uint8(np.clip(foreground.astype(np.float32, copy=False), 0.0, 1.0) * a * np.float32(255.0))


def alpha_to_uint8(alpha: np.ndarray) -> np.ndarray:
    """Alpha in [0, 1] (clipped) -> uint8 0..255, round-half-up; 1.0 -> 255 and 0.0 -> 0 exactly."""
    alpha = np.asarray(alpha)
    if not np.issubdtype(alpha.dtype, np.floating):
        raise TypeError(f"alpha must be floating point in [0, 1], got {alpha.dtype}")
    return _to_uint8(alpha.astype(np.float32, copy=False) * np.float32(255.0))

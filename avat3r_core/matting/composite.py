"""Background replacement by black, the Avat3r recipe's foreground images, and alpha quantisation.

Rounding: every float -> uint8 conversion here is round-half-up of the value clipped to [0, 255]
(``floor(x + 0.5)``), so 0.5 levels is not at the mercy of numpy's round-half-to-even and a pixel with
alpha 1 keeps its exact source value.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

COMPOSITE_MODES = ("src", "fgr")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """[0, 255] floats -> uint8 with round-half-up (see the module docstring).

    `values` is a temporary of the caller's and is overwritten: the same float operations in place are ~4x
    faster at image sizes than allocating a temporary for each (their pages are new memory every time).
    """
    if not isinstance(values, np.ndarray) or values.ndim == 0 or not values.flags.writeable:
        return np.floor(np.clip(values, 0.0, 255.0) + 0.5).astype(np.uint8)
    np.clip(values, 0.0, 255.0, out=values)
    values += 0.5
    np.floor(values, out=values)
    return values.astype(np.uint8)


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


def premultiply(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``composite_on_black(image, alpha / 255)`` for uint8 (H, W, 3) `image` and uint8 (H, W) `alpha`, bit
    for bit, at a fraction of the cost: the float32 path rounds to round(v * a / 255) for every one of the
    256 x 256 (value, alpha) pairs (a tie is impossible: v * a / 255 is never k + 1/2), which integers give
    exactly as ``(x + 128 + ((x + 128) >> 8)) >> 8`` with x = v * a; the tests check all of them.

    Mattes are 0 or 255 almost everywhere: those pixels are a bitwise AND with a 0x00/0xFF mask, and only
    the fractional ones (an edge: ~1% of a head crop) are multiplied. A matte that is mostly fractional goes
    through Pillow's masked composite over black (the same integer rounding) on the bytes as one channel.
    """
    image, alpha = np.asarray(image), np.asarray(alpha)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if alpha.dtype != np.uint8 or alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha must be uint8 {image.shape[:2]}, got {alpha.dtype} {alpha.shape}")
    height, width = alpha.shape
    values = np.ascontiguousarray(image).reshape(height, width * 3)
    flat = alpha.reshape(-1)
    edge = np.flatnonzero(flat - np.uint8(1) < np.uint8(254))  # 0 < alpha < 255 (uint8 wraps 0 to 255)
    if edge.size * 8 > flat.size:
        source, mask = Image.fromarray(values), Image.fromarray(np.repeat(alpha, 3, axis=1))
        return np.asarray(Image.composite(source, Image.new("L", source.size), mask)).reshape(image.shape)
    keep = np.repeat(alpha == 255, 3, axis=1).view(np.uint8)
    keep *= np.uint8(255)
    out = np.bitwise_and(values, keep, out=keep).reshape(image.shape)
    if edge.size:
        x = values.reshape(-1, 3)[edge].astype(np.uint16) * flat[edge, None]
        x += 128
        out.reshape(-1, 3)[edge] = (x + (x >> 8)) >> 8
    return out

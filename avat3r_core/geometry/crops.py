"""Head-centric square crops: where the window goes, the camera of the crop, and cutting the pixels.

Reading of the paper (DESIGN.md, stage 4): a square window centred on the projected head centre (from the
tracked mesh). At the Ava-256 4TB release's 1024 (h) x 667 (w) resolution the input window is 512 px and the
supervision window 667 px, i.e. the full image width, so both are plain copies with no resampling. At other
source resolutions the windows scale with the image (``window_fraction`` = window size / image width: 512/667
for inputs, 1.0 for supervision) and are resampled to the output sizes, so the field of view of a crop does
not depend on the resolution the capture was delivered at. Extent (``size``) and resolution (``out_size``)
are separate fields of :class:`CropWindow` for that reason.

Option ``fit="head_extent"`` sizes the input window to the projected tracked mesh instead (times a margin
for the hair the tracked mesh lacks), which puts more pixels on the head, as the paper motivates. The default
is ``"fixed"``, the literal reading.

Windows are *not* clamped to the image by default: a window that leaves the image keeps the head exactly at
its centre, and the part outside the image is black, the same colour as the matted background, so padding
and background are indistinguishable. (``clamp=True`` shifts a window that fits in the image back inside it
instead, for users who prefer image content to centring.)

Pixel convention (``cameras.py``): pixel (i, j) has its centre at (j + 0.5, i + 0.5), and a resize maps the
image's corners onto each other. Cutting at integer (x0, y0) is therefore an exact integer shift of the
principal point, and the resampling in :func:`cut_crop` (:func:`resample_matrix`, corner-aligned) matches
:meth:`Camera.resize`.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avat3r_core.geometry.cameras import Camera

INPUT_WINDOW_FRACTION = 512.0 / 667.0
"""Input window size / image width: 512 px at the 4TB release's 667 px width."""
SUPERVISION_WINDOW_FRACTION = 1.0
"""Supervision window size / image width: the full width (667 px at the 4TB release)."""


def head_center(vertices_head: np.ndarray) -> np.ndarray:
    """Centre of the tracked mesh's axis-aligned bounding box, ``(3,)``, head-local metres.

    The bounding-box centre, not the vertex mean: tracked-mesh topologies are much denser on the face than on
    the back of the head, which would drag a mean towards the face. The tracked mesh has no hair, so this is
    the centre of the skin surface; :func:`input_window`'s ``margin`` accounts for the hair.
    """
    verts = np.asarray(vertices_head, dtype=np.float64)
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.shape[0] == 0:
        raise ValueError(f"head_center: vertices must have shape (V, 3) with V > 0, got {verts.shape}")
    if not np.all(np.isfinite(verts)):
        raise ValueError("head_center: vertices contain non-finite values")
    return 0.5 * (verts.min(axis=0) + verts.max(axis=0))


@dataclass(frozen=True)
class CropWindow:
    """A square window ``[x0, x0 + size) x [y0, y0 + size)`` of a source image, resampled to ``out_size``.

    ``x0, y0`` may be negative and the window may extend past the image (black padding, see
    :func:`cut_crop`). ``size`` is the extent in source pixels (the field of view), ``out_size`` the
    resolution of the crop; they are equal when no resampling happens.
    """

    x0: int
    y0: int
    size: int
    out_size: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "size", "out_size"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise ValueError(f"CropWindow: {name} must be an integer, got a bool")
            try:
                object.__setattr__(self, name, operator.index(value))
            except TypeError as exc:
                raise ValueError(f"CropWindow: {name} must be an integer, got {value!r}") from exc
        if self.size <= 0 or self.out_size <= 0:
            raise ValueError(
                f"CropWindow: size and out_size must be positive, got {self.size}, {self.out_size}"
            )

    @property
    def resampled(self) -> bool:
        """Whether cutting this window resamples (``size != out_size``)."""
        return self.size != self.out_size

    def camera(self, camera: Camera) -> Camera:
        """The camera of the crop: ``camera.crop_and_resize(x0, y0, size, size, out_size, out_size)``."""
        return camera.crop_and_resize(self.x0, self.y0, self.size, self.size, self.out_size, self.out_size)


def _round_half_up(value: float) -> int:
    # Python's round() is half-to-even; half-up keeps the rule simple to state and reproduce elsewhere.
    return math.floor(value + 0.5)


def _project_center(camera_head: Camera, center_head: np.ndarray, where: str) -> np.ndarray:
    center = np.asarray(center_head, dtype=np.float64)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"{where}: center_head must be a finite 3-vector, got shape {center.shape}")
    uv, depth = camera_head.project(center[None])
    if not depth[0] > 0.0:
        raise ValueError(f"{where}: the head centre is behind the camera (depth {depth[0]:.4g})")
    return uv[0]


def _size_from_fraction(camera: Camera, window_fraction: float, where: str) -> int:
    fraction = float(window_fraction)
    if not math.isfinite(fraction) or fraction <= 0.0:
        raise ValueError(f"{where}: window_fraction must be positive, got {window_fraction}")
    return max(1, _round_half_up(fraction * camera.width))


def _clamped(start: int, size: int, extent: int) -> int:
    return min(max(start, 0), extent - size) if size <= extent else start


def input_window(
    camera_head: Camera,
    center_head: np.ndarray,
    *,
    window_fraction: float | None = INPUT_WINDOW_FRACTION,
    out_size: int,
    fit: Literal["fixed", "head_extent"] = "fixed",
    vertices_head: np.ndarray | None = None,
    margin: float = 1.25,
    clamp: bool = False,
) -> CropWindow:
    """The input-view window: square, centred on the projected head centre, resampled to ``out_size``.

    ``fit="fixed"``: ``size = round(window_fraction * image width)`` (512 at 667 px width with the default).
    ``fit="head_extent"``: the window is still centred on the projected head centre, and its half-size is
    ``margin`` times the largest distance from that centre to the projected bounding box of
    ``vertices_head`` (plus 0.5 px for the rounding of the centre), so with ``margin >= 1`` every projected
    vertex lies inside; ``window_fraction`` is ignored. The margin makes room for the hair the tracked mesh
    lacks.

    ``x0, y0`` round the window's top-left corner so that its centre lies within 0.5 px of the projected head
    centre (rounded, not clamped, unless ``clamp``).
    """
    uv = _project_center(camera_head, center_head, "input_window")
    if fit == "fixed":
        if window_fraction is None:
            raise ValueError("input_window: fit='fixed' needs window_fraction")
        size = _size_from_fraction(camera_head, window_fraction, "input_window")
    elif fit == "head_extent":
        if vertices_head is None:
            raise ValueError("input_window: fit='head_extent' needs vertices_head")
        if not math.isfinite(margin) or margin <= 0.0:
            raise ValueError(f"input_window: margin must be positive, got {margin}")
        verts_uv, depth = camera_head.project(np.asarray(vertices_head, dtype=np.float64))
        if verts_uv.shape[0] == 0 or not np.all(depth > 0.0):
            raise ValueError("input_window: tracked-mesh vertices are missing or behind the camera")
        reach = max(
            float(np.max(np.abs(verts_uv[:, 0] - uv[0]))),
            float(np.max(np.abs(verts_uv[:, 1] - uv[1]))),
        )
        size = max(1, math.ceil(2.0 * (margin * reach + 0.5)))
    else:
        raise ValueError(f"input_window: fit must be 'fixed' or 'head_extent', got {fit!r}")
    x0 = _round_half_up(uv[0] - 0.5 * size)
    y0 = _round_half_up(uv[1] - 0.5 * size)
    if clamp:
        x0, y0 = _clamped(x0, size, camera_head.width), _clamped(y0, size, camera_head.height)
    return CropWindow(x0=x0, y0=y0, size=size, out_size=out_size)


def supervision_window(
    camera_head: Camera,
    center_head: np.ndarray,
    *,
    window_fraction: float = SUPERVISION_WINDOW_FRACTION,
    out_size: int,
    clamp: bool = False,
) -> CropWindow:
    """The supervision-view window: ``round(window_fraction * width)`` px, horizontally centred on the image.

    With the default fraction the window is the full image width (``x0 == 0``) and moves only vertically:
    ``y0`` puts the window's centre within 0.5 px of the projected head centre's ``v`` (rounded, not clamped,
    unless ``clamp``). Horizontally the image centre is used, not the head, because at full width any other
    ``x0`` would only add black columns; for fractions below 1, ``x0 = round((W - size) / 2)``.
    """
    uv = _project_center(camera_head, center_head, "supervision_window")
    size = _size_from_fraction(camera_head, window_fraction, "supervision_window")
    x0 = _round_half_up(0.5 * (camera_head.width - size))
    y0 = _round_half_up(uv[1] - 0.5 * size)
    if clamp:
        y0 = _clamped(y0, size, camera_head.height)
    return CropWindow(x0=x0, y0=y0, size=size, out_size=out_size)


_RESAMPLE = ("area", "bilinear")


def resample_matrix(size: int, out_size: int, resample: Literal["area", "bilinear"] = "area") -> np.ndarray:
    """Weights ``(out_size, size)`` that resample a 1-D signal of ``size`` pixels to ``out_size`` pixels.

    Corner-aligned, like :meth:`Camera.resize`: output pixel ``o`` covers source interval
    ``[o * s, (o + 1) * s]`` with ``s = size / out_size``, and its centre samples source ``(o + 0.5) * s``.

    ``"area"``: the exact fraction of each source pixel inside that interval, i.e. the exact area average of
    the pixels seen as constant squares (anti-aliased, preserves the mean, no systematic sub-pixel shift).
    PIL's BOX is not used because for non-integer ratios it includes or excludes whole source pixels,
    moving content by up to a few tenths of a pixel.

    ``"bilinear"``: a triangle filter centred on ``(o + 0.5) * s``, widened by ``s`` when shrinking
    (anti-aliased, the same filter as PIL's BILINEAR) and renormalised where it leaves the source.

    Rows sum to 1.
    """
    if size <= 0 or out_size <= 0:
        raise ValueError(f"resample_matrix: sizes must be positive, got {size}, {out_size}")
    scale = size / out_size
    src_lo = np.arange(size, dtype=np.float64)[None, :]
    out_lo = np.arange(out_size, dtype=np.float64)[:, None] * scale
    if resample == "area":
        overlap = np.minimum(src_lo + 1.0, out_lo + scale) - np.maximum(src_lo, out_lo)
        weights = np.clip(overlap, 0.0, None)
    elif resample == "bilinear":
        support = max(scale, 1.0)
        distance = (src_lo + 0.5) - (out_lo + 0.5 * scale)
        weights = np.clip(1.0 - np.abs(distance) / support, 0.0, None)
    else:
        raise ValueError(f"resample must be one of {_RESAMPLE}, got {resample!r}")
    return weights / weights.sum(axis=1, keepdims=True)


def _paste_window(image: np.ndarray, window: CropWindow) -> np.ndarray:
    height, width = image.shape[:2]
    out = np.zeros((window.size, window.size, *image.shape[2:]), dtype=image.dtype)
    ys0, ys1 = max(window.y0, 0), min(window.y0 + window.size, height)
    xs0, xs1 = max(window.x0, 0), min(window.x0 + window.size, width)
    if ys0 < ys1 and xs0 < xs1:
        out[ys0 - window.y0 : ys1 - window.y0, xs0 - window.x0 : xs1 - window.x0] = image[ys0:ys1, xs0:xs1]
    return out


def cut_crop(
    image: np.ndarray, window: CropWindow, *, resample: Literal["area", "bilinear"] = "area"
) -> np.ndarray:
    """The pixels of ``window``: ``(out_size, out_size)`` or ``(out_size, out_size, C)``, same dtype.

    Pixels of the window outside the image are 0 (black, like the matted background; alpha 0). When
    ``window.size == window.out_size`` the result is an exact copy (any dtype, bit-identical to slicing).
    Otherwise the padded window is resampled separably with :func:`resample_matrix` (``"area"``, the
    default: exact area average, anti-aliased when shrinking; or ``"bilinear"``), whose corner-aligned
    mapping is exactly the one :meth:`Camera.resize` assumes, so ``window.camera(camera)`` stays the camera
    of the crop. Resampling supports uint8 (computed in float32, rounded and clipped back to uint8) and
    floating images such as alpha (computed in float64, returned in the input dtype); other dtypes raise.
    The black padding is part of the window before resampling, so crop pixels at the image border blend
    with black, consistently with the crop camera.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"cut_crop: image must be (H, W) or (H, W, C), got {arr.shape}")
    if resample not in _RESAMPLE:
        raise ValueError(f"cut_crop: resample must be one of {_RESAMPLE}, got {resample!r}")
    window_pixels = _paste_window(arr, window)
    if not window.resampled:
        return window_pixels
    if arr.dtype == np.uint8:
        work = np.float32
    elif np.issubdtype(arr.dtype, np.floating):
        work = np.float64
    else:
        raise ValueError(f"cut_crop: resampling supports uint8 and float images, got {arr.dtype}")
    weights = resample_matrix(window.size, window.out_size, resample).astype(work)
    pixels = window_pixels.astype(work, copy=False)
    # rows then columns: (out, size) @ (size, size[, C]) -> (out, size[, C]), then the same along axis 1
    rows = np.tensordot(weights, pixels, axes=([1], [0]))
    out = np.moveaxis(np.tensordot(weights, rows, axes=([1], [1])), 0, 1)
    if arr.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(arr.dtype, copy=False)

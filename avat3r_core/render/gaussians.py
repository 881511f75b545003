"""The types every splatting backend shares: one scene of Gaussians, the rasterisation settings, the output.

Both backends (pure PyTorch and gsplat) take exactly these and must agree to float precision, so the
conventions live here, in one place, rather than in each backend:

* ``means`` are world points; ``w2c`` is the OpenCV world-to-camera transform (x right, y down, z forward) and
  ``K`` the pixel intrinsics of the rendered image, as in :mod:`avat3r_core.geometry.cameras`.
* Continuous pixel coordinates put the image's top-left *corner* at (0, 0): pixel (row i, column j) is
  evaluated at its centre (j + 0.5, i + 0.5), which is also where gsplat evaluates it.
* ``quats`` are **wxyz** (normalised by the renderer), ``scales`` and ``opacities`` are post-activation, and
  ``colors`` are RGB (spherical-harmonics degree 0, already activated): the reconstruction model applies its
  activations, the renderer none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from avat3r_core.errors import Avat3rError

# gsplat 1.5.3 hard-codes these three in its CUDA kernels (ALPHA_THRESHOLD, min(0.999f, ...), the 1e-4
# transmittance stop); the torch backend uses the same defaults so that both render the same image.
GSPLAT_ALPHA_MIN = 1.0 / 255.0
GSPLAT_ALPHA_MAX = 0.999
GSPLAT_MIN_TRANSMITTANCE = 1e-4


class RenderError(Avat3rError):
    """Base class of the renderer's deliberate errors."""


class BackendUnavailableError(RenderError):
    """The requested backend cannot run here (e.g. gsplat without CUDA or without the package)."""


class PairBudgetError(RenderError):
    """The (Gaussian, pixel) pair count exceeds the caller's budget; raised before anything large is built.

    The pure-PyTorch backend's memory is proportional to the number of pairs (about 300 bytes each with
    autograd), so the count, not the number of Gaussians, is what decides whether a render fits.
    """

    def __init__(self, pairs: int, max_pairs: int) -> None:
        self.pairs, self.max_pairs = pairs, max_pairs
        super().__init__(
            f"render: {pairs} (Gaussian, pixel) pairs exceed max_pairs={max_pairs} (about "
            f"{pairs * 300 / 2**30:.1f} GiB with autograd); render fewer or smaller Gaussians, a smaller "
            f"image, or raise max_pairs"
        )


def _check_tensor(value: object, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
    return value


@dataclass(frozen=True, eq=False)
class Gaussians:
    """The 3D Gaussians of ONE scene, all tensors on one device with one floating dtype.

    means (N, 3) world positions; quats (N, 4) rotations, wxyz, any norm; scales (N, 3) standard deviations
    along the rotated axes in world units; opacities (N,) in [0, 1]; colors (N, 3) RGB.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def __post_init__(self) -> None:
        means = _check_tensor(self.means, "Gaussians.means")
        if means.ndim != 2 or means.shape[1] != 3:
            raise ValueError(f"Gaussians.means must have shape (N, 3), got {tuple(means.shape)}")
        n = means.shape[0]
        for name, tail in (("quats", (4,)), ("scales", (3,)), ("opacities", ()), ("colors", (3,))):
            value = _check_tensor(getattr(self, name), f"Gaussians.{name}")
            expected = (n, *tail)
            if tuple(value.shape) != expected:
                shape = "(N,)" if not tail else f"(N, {tail[0]})"
                raise ValueError(
                    f"Gaussians.{name} must have shape {shape} with N = {n} (from means), got "
                    f"{tuple(value.shape)}"
                )
            if value.device != means.device or value.dtype != means.dtype:
                raise ValueError(
                    f"Gaussians.{name} is {value.dtype} on {value.device}, but means is {means.dtype} on "
                    f"{means.device}; all fields must share one dtype and device"
                )

    @property
    def n(self) -> int:
        return int(self.means.shape[0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians:
        """A copy on another device and/or dtype (differentiable, like ``Tensor.to``)."""
        return Gaussians(
            *(getattr(self, f).to(device=device, dtype=dtype) for f in Gaussians.__dataclass_fields__)
        )


@dataclass(frozen=True)
class RasterSettings:
    """The rasterisation constants; every backend honours the same values.

    eps2d: pixels² added to the projected covariance's diagonal (gsplat's "classic" dilation), so that a
      Gaussian smaller than a pixel still covers about one pixel instead of aliasing away.
    near_plane, far_plane: a Gaussian is kept when its camera-space depth z is in [near, far] (as in gsplat).
    alpha_min: a (Gaussian, pixel) contribution with alpha < alpha_min is skipped; 0 disables the cutoff
      (then every Gaussian covers the whole image: only for tiny gradient checks).
    alpha_max: alpha is clamped to it, so no single Gaussian makes a pixel fully opaque.
    min_transmittance: a pixel stops compositing at the first Gaussian that would bring its transmittance to
      or below this value (that Gaussian is skipped too, as in gsplat); 0 disables the stop.
    """

    eps2d: float = 0.3
    near_plane: float = 0.01
    far_plane: float = 1e10
    alpha_min: float = GSPLAT_ALPHA_MIN
    alpha_max: float = GSPLAT_ALPHA_MAX
    min_transmittance: float = GSPLAT_MIN_TRANSMITTANCE

    def __post_init__(self) -> None:
        if not self.eps2d >= 0.0:
            raise ValueError(f"RasterSettings.eps2d must be >= 0, got {self.eps2d}")
        if not 0.0 < self.near_plane < self.far_plane:
            raise ValueError(
                f"RasterSettings: need 0 < near_plane < far_plane, got {self.near_plane}, {self.far_plane}"
            )
        if not 0.0 <= self.alpha_min < self.alpha_max < 1.0:
            raise ValueError(
                f"RasterSettings: need 0 <= alpha_min < alpha_max < 1, got {self.alpha_min}, {self.alpha_max}"
            )
        if not 0.0 <= self.min_transmittance < 1.0:
            raise ValueError(
                f"RasterSettings.min_transmittance must be in [0, 1), got {self.min_transmittance}"
            )

    @property
    def is_gsplat(self) -> bool:
        """Whether gsplat (whose cutoffs are compiled in) can render with these settings."""
        return (
            self.alpha_min == GSPLAT_ALPHA_MIN
            and self.alpha_max == GSPLAT_ALPHA_MAX
            and self.min_transmittance == GSPLAT_MIN_TRANSMITTANCE
        )


@dataclass(frozen=True, eq=False)
class RenderOutput:
    """Rendered images of C cameras.

    rgb (C, 3, H, W): composited colour, with the background (if any) under it: rgb + (1 - alpha) * bg.
    alpha (C, 1, H, W): accumulated opacity, sum of the compositing weights.
    depth (C, 1, H, W): expected camera-space z, sum(w z) / alpha (0 where alpha = 0), gsplat's "ED".
    backend: the backend that rendered ("torch" or "gsplat").
    pairs: (Gaussian, pixel) pairs the torch backend composited (pixel centres inside the Gaussians' cutoff
      ellipses, all cameras), None for gsplat.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    backend: str
    pairs: int | None = None


def check_cameras(K: object, w2c: object, width: object, height: object, gaussians: Gaussians) -> int:
    """Validate the camera arguments of :func:`avat3r_core.render.render`; returns the camera count C."""
    K = _check_tensor(K, "K")
    w2c = _check_tensor(w2c, "w2c")
    if K.ndim != 3 or tuple(K.shape[1:]) != (3, 3):
        raise ValueError(f"K must have shape (C, 3, 3), got {tuple(K.shape)}")
    if w2c.ndim != 3 or tuple(w2c.shape[1:]) != (4, 4):
        raise ValueError(f"w2c must have shape (C, 4, 4), got {tuple(w2c.shape)}")
    if K.shape[0] != w2c.shape[0]:
        raise ValueError(
            f"K and w2c must hold the same number of cameras, got {K.shape[0]} and {w2c.shape[0]}"
        )
    for name, value in (("K", K), ("w2c", w2c)):
        if value.device != gaussians.device:
            raise ValueError(f"{name} is on {value.device}, the Gaussians on {gaussians.device}")
    for name, size in (("width", width), ("height", height)):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"{name} must be a positive int, got {size!r}")
    return int(K.shape[0])


def check_background(background: object, gaussians: Gaussians) -> Tensor | None:
    """Validate the optional (3,) background colour; returns it in the Gaussians' dtype."""
    if background is None:
        return None
    background = _check_tensor(background, "background")
    if tuple(background.shape) != (3,):
        raise ValueError(f"background must have shape (3,), got {tuple(background.shape)}")
    if background.device != gaussians.device:
        raise ValueError(f"background is on {background.device}, the Gaussians on {gaussians.device}")
    return background.to(gaussians.dtype)


def composite_background(rgb: Tensor, alpha: Tensor, background: Tensor | None) -> Tensor:
    """rgb (C, 3, H, W) over a constant background: rgb + (1 - alpha) * background."""
    if background is None:
        return rgb
    return rgb + (1.0 - alpha) * background.view(1, 3, 1, 1)

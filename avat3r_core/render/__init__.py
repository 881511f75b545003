"""Differentiable 3D Gaussian splatting: one function, :func:`render`, over interchangeable backends.

- ``gaussians``: :class:`Gaussians` (one scene), :class:`RasterSettings`, :class:`RenderOutput`, the errors.
- ``torch_backend``: the packed pure-PyTorch rasteriser (CPU and GPU, autograd); the reference.
- ``gsplat_backend``: gsplat's CUDA rasteriser (optional dependency), used for CUDA tensors when installed.

Both backends follow the same conventions (OpenCV ``w2c``, pixel ``K``, pixel centres at (j + 0.5, i + 0.5),
wxyz quaternions, gsplat's cutoffs), so a model trained with one renders the same with the other.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from avat3r_core.render.gaussians import (
    BackendUnavailableError,
    Gaussians,
    PairBudgetError,
    RasterSettings,
    RenderError,
    RenderOutput,
    check_background,
    check_cameras,
    composite_background,
)
from avat3r_core.render.gsplat_backend import gsplat_unavailable_reason, render_gsplat
from avat3r_core.render.torch_backend import DEFAULT_CHUNK_PAIRS, render_torch

BACKENDS = ("auto", "torch", "gsplat")


def select_backend(
    gaussians: Gaussians, backend: str = "auto", settings: RasterSettings | None = None
) -> str:
    """The backend ``render`` uses: "auto" is gsplat for CUDA tensors when gsplat works there, else torch.

    "auto" also falls back to torch when the settings use cutoffs that gsplat has compiled in differently.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    settings = settings or RasterSettings()
    usable = settings.is_gsplat and gsplat_unavailable_reason(gaussians.device) is None
    return "gsplat" if usable else "torch"


def render(
    gaussians: Gaussians,
    K: Tensor,
    w2c: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    backend: str = "auto",
    *,
    settings: RasterSettings | None = None,
    max_pairs: int | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
    packed: bool = True,
) -> RenderOutput:
    """Render one scene of Gaussians into C cameras; differentiable with respect to every Gaussian field.

    K (C, 3, 3) pixel intrinsics and w2c (C, 4, 4) OpenCV world-to-camera, on the Gaussians' device (cast to
    their dtype); background (3,) composited as rgb + (1 - alpha) * background, none (black) by default.
    backend: "torch", "gsplat" (CUDA and gsplat required, else :class:`BackendUnavailableError`) or "auto".
    settings: :class:`RasterSettings` (eps2d, near/far planes, alpha cutoffs); gsplat's defaults.
    max_pairs, chunk_pairs: the torch backend's pair budget and band size (see ``render_torch``).
    packed: gsplat's packed mode (gsplat backend only).
    """
    if not isinstance(gaussians, Gaussians):
        raise ValueError(f"gaussians must be a Gaussians, got {type(gaussians).__name__}")
    check_cameras(K, w2c, width, height, gaussians)
    bg = check_background(background, gaussians)
    settings = settings or RasterSettings()
    chosen = select_backend(gaussians, backend, settings)
    if chosen == "gsplat":
        out = render_gsplat(gaussians, K, w2c, width, height, settings, packed=packed)
    else:
        out = render_torch(
            gaussians, K, w2c, width, height, settings, max_pairs=max_pairs, chunk_pairs=chunk_pairs
        )
    return dataclasses.replace(out, rgb=composite_background(out.rgb, out.alpha, bg))


__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "Gaussians",
    "PairBudgetError",
    "RasterSettings",
    "RenderError",
    "RenderOutput",
    "gsplat_unavailable_reason",
    "render",
    "select_backend",
]

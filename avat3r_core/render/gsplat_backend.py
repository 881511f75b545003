"""gsplat backend: nerfstudio's CUDA rasteriser behind the same interface as the torch backend.

At Avat3r's size (4 x 512² Gaussians rendered at 667²) only a CUDA rasteriser is fast enough, and gsplat is
the maintained one that installs from PyPI. It is an optional dependency: it is imported lazily, and only
when the Gaussians are CUDA tensors, because ``import gsplat`` costs seconds and its first CUDA call
JIT-compiles the kernels (minutes, once per machine). gsplat 1.5.3 imports ``packaging`` without declaring
it, so that is checked too. Its conventions match ours (reference/model.md section 4): ``viewmats`` are
OpenCV world-to-camera, ``Ks`` pixel intrinsics, pixels evaluated at (j + 0.5, i + 0.5), quaternions wxyz,
post-activation scales and opacities; with ``sh_degree=None`` colours are used as given.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch
from torch import Tensor

from avat3r_core.render.gaussians import BackendUnavailableError, Gaussians, RasterSettings, RenderOutput


@functools.cache
def _import_gsplat() -> ModuleType | str:
    """The gsplat module, or why it cannot be imported (cached: a failed import is not retried)."""
    try:
        importlib.import_module("packaging.version")
        return importlib.import_module("gsplat")
    except ImportError as exc:
        return f"{exc} (install the optional GPU dependencies: pip install 'gsplat>=1.5' packaging)"


def gsplat_unavailable_reason(device: torch.device) -> str | None:
    """None when gsplat can render tensors on ``device``, else a one-line reason."""
    if device.type != "cuda":
        return f"gsplat renders CUDA tensors only; the Gaussians are on {device}"
    if not torch.cuda.is_available():
        return "gsplat needs CUDA, and torch.cuda.is_available() is False"
    module = _import_gsplat()
    return module if isinstance(module, str) else None


def render_gsplat(
    gaussians: Gaussians,
    K: Tensor,
    w2c: Tensor,
    width: int,
    height: int,
    settings: RasterSettings,
    *,
    packed: bool = True,
) -> RenderOutput:
    """Render C cameras with ``gsplat.rasterization`` (no background: the caller composites it).

    gsplat's kernels are float32; other dtypes are converted there and back (differentiably).
    packed: gsplat's memory-saving layout for many Gaussians; the images are the same either way.
    """
    reason = gsplat_unavailable_reason(gaussians.device)
    if reason is not None:
        raise BackendUnavailableError(f"render backend 'gsplat' is unavailable: {reason}")
    if not settings.is_gsplat:
        raise ValueError(
            "render backend 'gsplat' has alpha_min=1/255, alpha_max=0.999 and min_transmittance=1e-4 "
            f"compiled in; got {settings}; use backend='torch' for other values"
        )
    n_cams, dtype = K.shape[0], gaussians.dtype
    if gaussians.n == 0:  # nothing to splat; gsplat's kernels are not needed for an empty image
        zeros = gaussians.means.sum() * 0.0 + torch.zeros(
            n_cams, 1, height, width, dtype=dtype, device=gaussians.device
        )
        return RenderOutput(rgb=zeros.repeat(1, 3, 1, 1), alpha=zeros, depth=zeros, backend="gsplat")

    gsplat = _import_gsplat()
    assert isinstance(gsplat, ModuleType)
    f32 = [t.float().contiguous() for t in (gaussians.means, gaussians.quats, gaussians.scales)]
    colors, alphas, _ = gsplat.rasterization(
        means=f32[0],
        quats=f32[1],
        scales=f32[2],
        opacities=gaussians.opacities.float().contiguous(),
        colors=gaussians.colors.float().contiguous(),
        viewmats=w2c.float().contiguous(),
        Ks=K.float().contiguous(),
        width=width,
        height=height,
        near_plane=settings.near_plane,
        far_plane=settings.far_plane,
        eps2d=settings.eps2d,
        sh_degree=None,
        packed=packed,
        render_mode="RGB+ED",  # (C, H, W, 4): RGB and depth normalised by alpha, as RenderOutput.depth
        rasterize_mode="classic",
    )
    colors = colors.permute(0, 3, 1, 2).to(dtype)
    return RenderOutput(
        rgb=colors[:, :3].contiguous(),
        alpha=alphas.permute(0, 3, 1, 2).to(dtype).contiguous(),
        depth=colors[:, 3:4].contiguous(),
        backend="gsplat",
    )

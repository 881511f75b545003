"""Pure-PyTorch 3D Gaussian splatting: the reference backend, and the one that runs without CUDA.

gsplat cannot render on CPU (its rasteriser is CUDA-only), and the tests, the CPU training smoke runs and the
parity checks need a renderer that runs everywhere and that autograd differentiates without hand-written
backward passes. Tiles would need a Python loop or dense tile x Gaussian tensors, so this backend is
"packed" instead (reference/model.md section 4): it works on the flat list of (Gaussian, pixel) pairs, and
its cost and memory are proportional to the number of pairs.

1. Project: EWA splatting with gsplat's conventions (Jacobian evaluated at the mean clamped to 1.3x the
   field of view, ``eps2d`` dilation, near/far test), keeping the Gaussians whose cutoff ellipse
   ``o exp(-q/2) >= alpha_min`` reaches the image, sorted by camera-space depth.
2. Enumerate, row by row, the pixel centres inside each cutoff ellipse (a quadratic per row gives the column
   span). The cutoff decides exactly which pairs count, so the result equals a dense evaluation of every
   Gaussian at every pixel, and no pair below the cutoff is ever built (a box would waste a quarter or more).
3. Stable-sort the pairs by pixel: pairs are enumerated front to back, so each pixel keeps depth order.
4. Transmittance before each pair from a float64 cumulative sum of log(1 - alpha), made exclusive and reset
   at each pixel's first pair (float32 would lose the small per-pixel sums in the global running sum).
5. Accumulate colour, weight and weighted depth into the pixels with one ``index_add``.

Per-Gaussian values sit in two tables (geometry, features) that the pairs gather with ``index_select`` and
split with ``unbind``, so the backward pass scatters with one ``index_add`` per table instead of one
zero-filled pair-sized tensor per column (that alone took a third of the backward time).
Large renders are split into bands of image rows of at most ``chunk_pairs`` pairs; with autograd each band
is checkpointed, so the backward pass holds one band's pairs at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from avat3r_core.render.gaussians import Gaussians, PairBudgetError, RasterSettings, RenderOutput

DEFAULT_CHUNK_PAIRS = 1 << 23  # about 2.5 GiB of pair tensors with autograd (~300 bytes a pair)
# Widening of the enumerated ellipse (pixels, and q units) so rounding never drops a pair at the cutoff; the
# alpha test then rejects the few extra pairs exactly.
_PIXEL_MARGIN = 1e-2
_Q_MARGIN = 1e-4
# gsplat evaluates the projection Jacobian at the mean clamped to the field of view widened by this fraction
# of its half-extent, so that Gaussians far outside the image do not get huge, elongated footprints.
_FOV_MARGIN = 0.3
# Columns of Splats.params.
_U, _V, _A, _B, _C = 0, 1, 2, 3, 4


def quat_scale_to_covariance(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances (N, 3, 3) = R diag(s²) Rᵀ from wxyz quaternions (normalised here) and scales."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).view(*quats.shape[:-1], 3, 3)  # fmt: skip
    scaled = rotation * scales[..., None, :]
    return scaled @ scaled.transpose(-1, -2)


@dataclass(frozen=True, eq=False)
class Splats:
    """The (camera, Gaussian) entries that reach the image, front to back within each camera.

    params (M, 6), differentiable: u, v (projected mean, pixels), a, b, c (inverse 2D covariance: the
      exponent is q = a dx² + 2 b dx dy + c dy²), opacity.
    features (M, 5), differentiable: what is accumulated, r, g, b, 1, depth.
    extent2 (M,) float64: q on the cutoff ellipse, 2 ln(opacity / alpha_min) (inf without a cutoff).
    y0, y1 (M,): rows of the ellipse's bounding box, clipped to the image; row0 (M,): camera * height.
    """

    params: Tensor
    features: Tensor
    extent2: Tensor
    y0: Tensor
    y1: Tensor
    row0: Tensor


@dataclass(frozen=True, eq=False)
class Spans:
    """Per (entry, image row) crossing an ellipse: its pixels are columns c0 .. c0 + count - 1 (count > 0).

    entry, stacked_row (camera * height + image row: the row in all cameras' images stacked), c0, count: (S,).
    """

    entry: Tensor
    stacked_row: Tensor
    c0: Tensor
    count: Tensor

    def select(self, index: Tensor) -> Spans:
        return Spans(*(t.index_select(0, index) for t in (self.entry, self.stacked_row, self.c0, self.count)))


def _jacobian(p_cam: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """(M, 2, 3) Jacobian of the perspective projection, at the mean clamped as gsplat clamps it."""
    x, y, z = p_cam.unbind(-1)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    margin_x, margin_y = _FOV_MARGIN * 0.5 * width / fx, _FOV_MARGIN * 0.5 * height / fy
    tx = z * torch.minimum((width - cx) / fx + margin_x, torch.maximum(-(cx / fx + margin_x), x / z))
    ty = z * torch.minimum((height - cy) / fy + margin_y, torch.maximum(-(cy / fy + margin_y), y / z))
    zero = torch.zeros_like(z)
    row_u = torch.stack([fx / z, zero, -fx * tx / (z * z)], dim=-1)
    row_v = torch.stack([zero, fy / z, -fy * ty / (z * z)], dim=-1)
    return torch.stack([row_u, row_v], dim=-2)


def _pixel_range(centre: Tensor, half: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First and last pixel whose centre (index + 0.5) lies within centre +- half, clipped to the image."""
    first = torch.ceil(centre - half - 0.5).clamp(-1, size).long().clamp_min(0)
    last = torch.floor(centre + half - 0.5).clamp(-1, size).long().clamp_max(size - 1)
    return first, last


def project(
    gaussians: Gaussians, K: Tensor, w2c: Tensor, width: int, height: int, settings: RasterSettings
) -> Splats:
    """EWA projection of every Gaussian into every camera; culls what cannot touch the image."""
    dtype = gaussians.dtype
    K, w2c = K.to(dtype), w2c.to(dtype)
    rotation, translation = w2c[:, :3, :3], w2c[:, :3, 3]
    p_cam = torch.einsum("cij,nj->cni", rotation, gaussians.means) + translation[:, None, :]
    with torch.no_grad():
        depth = p_cam[..., 2]
        keep = (depth >= settings.near_plane) & (depth <= settings.far_plane)
        keep &= (gaussians.opacities >= settings.alpha_min)[None, :]
        cam, gid = keep.nonzero(as_tuple=True)

    p = p_cam[cam, gid]
    rot, k = rotation[cam], K[cam]
    covariance = (
        rot @ quat_scale_to_covariance(gaussians.quats, gaussians.scales)[gid] @ rot.transpose(-1, -2)
    )
    jacobian = _jacobian(p, k, width, height)
    cov2d = jacobian @ covariance @ jacobian.transpose(-1, -2)
    a, b, c = cov2d[:, 0, 0] + settings.eps2d, cov2d[:, 0, 1], cov2d[:, 1, 1] + settings.eps2d
    det = a * c - b * b
    u = k[:, 0, 0] * p[:, 0] / p[:, 2] + k[:, 0, 2]
    v = k[:, 1, 1] * p[:, 1] / p[:, 2] + k[:, 1, 2]
    opacities = gaussians.opacities[gid]

    with torch.no_grad():  # cull by the bounding box of the cutoff ellipse q <= extent2
        if settings.alpha_min > 0.0:
            extent2 = 2.0 * torch.log(opacities.double() / settings.alpha_min).clamp_min(0.0)
        else:
            extent2 = torch.full_like(opacities, math.inf, dtype=torch.float64)
        ud, vd = u.detach().double(), v.detach().double()
        x0, x1 = _pixel_range(ud, torch.sqrt(extent2 * a.double()) + _PIXEL_MARGIN, width)
        y0, y1 = _pixel_range(vd, torch.sqrt(extent2 * c.double()) + _PIXEL_MARGIN, height)
        finite = torch.isfinite(ud) & torch.isfinite(vd) & torch.isfinite(det)
        visible = (finite & (det > 0) & (x0 <= x1) & (y0 <= y1)).nonzero().squeeze(1)
        order = visible[torch.argsort(p[visible, 2].detach(), stable=True)]

    det = det[order]
    params = torch.stack(
        [u[order], v[order], c[order] / det, -b[order] / det, a[order] / det, opacities[order]], -1
    )
    features = torch.cat([gaussians.colors[gid[order]], torch.ones_like(det)[:, None], p[order, 2:3]], dim=-1)
    return Splats(
        params=params,
        features=features,
        extent2=extent2[order],
        y0=y0[order],
        y1=y1[order],
        row0=cam[order] * height,
    )


@torch.no_grad()
def spans(splats: Splats, width: int) -> Spans:
    """The column span of every (entry, row) inside the entry's cutoff ellipse, in entry order (float64)."""
    device = splats.y0.device
    rows = splats.y1 - splats.y0 + 1
    entry = torch.repeat_interleave(torch.arange(rows.shape[0], device=device), rows)
    starts = torch.repeat_interleave(torch.cumsum(rows, 0) - rows, rows)
    row = splats.y0.index_select(0, entry) + torch.arange(entry.shape[0], device=device) - starts
    p = splats.params.detach().double().index_select(0, entry)
    dy = row + 0.5 - p[:, _V]
    a, b, c = p[:, _A], p[:, _B], p[:, _C]
    extent2 = splats.extent2.index_select(0, entry) + _Q_MARGIN
    # a dx² + 2 b dy dx + c dy² <= extent2, solved for dx
    disc = (b * dy) ** 2 - a * (c * dy * dy - extent2)
    half = torch.sqrt(disc.clamp_min(0.0)) / a + _PIXEL_MARGIN
    c0, c1 = _pixel_range(p[:, _U] - b * dy / a, half, width)
    count = torch.where(disc >= 0, c1 - c0 + 1, 0).clamp_min(0)
    keep = count.nonzero().squeeze(1)
    stacked = row + splats.row0.index_select(0, entry)
    return Spans(entry, stacked, c0, count).select(keep)


def plan_bands(spans: Spans, n_rows: int, chunk_pairs: int) -> tuple[int, list[tuple[int, int]]]:
    """Total pair count and bands [r0, r1) of the stacked image rows, each of about chunk_pairs pairs or less.

    A single row is never split, so a band exceeds chunk_pairs only when one row alone does.
    """
    total = int(spans.count.sum())
    if total == 0:
        return 0, []
    if total <= chunk_pairs:
        return total, [(0, n_rows)]
    per_row = torch.zeros(n_rows, dtype=torch.long, device=spans.count.device)
    per_row.index_add_(0, spans.stacked_row, spans.count)
    bands, start, held = [], 0, 0
    for row, count in enumerate(per_row.tolist()):
        if held + count > chunk_pairs and row > start:
            bands.append((start, row))
            start, held = row, 0
        held += count
    bands.append((start, n_rows))
    return total, bands


def _band(
    params: Tensor,
    features: Tensor,
    spans: Spans,
    r0: int,
    r1: int,
    width: int,
    height: int,
    settings: RasterSettings,
) -> Tensor:
    """Composite the stacked rows [r0, r1) from their spans: ((r1 - r0) * width, 5) accumulated features."""
    device = params.device
    out = torch.zeros((r1 - r0) * width, 5, dtype=params.dtype, device=device)
    n_pairs = int(spans.count.sum())
    if n_pairs == 0:
        return out

    with torch.no_grad():  # the pairs' pixels, sorted; the sort is stable, so front to back per pixel
        span = torch.repeat_interleave(spans.count)
        # pair i of a span whose pairs start at `first` has pixel (stacked_row - r0) * width + c0 + i - first
        first = torch.cumsum(spans.count, 0) - spans.count
        base = (spans.stacked_row - r0) * width + spans.c0 - first
        index_dtype = torch.int32 if out.shape[0] + n_pairs < 2**31 else torch.long  # int32 sorts 2x faster
        key = torch.arange(n_pairs, device=device, dtype=index_dtype) + base.to(index_dtype).index_select(
            0, span
        )
        pixel, order = torch.sort(key, stable=True)
        del key
        entry = spans.entry.index_select(0, span.index_select(0, order))
        del span, order
        stacked_row = torch.div(pixel, width, rounding_mode="floor")
        col = pixel - stacked_row * width
        row = (stacked_row + r0) % height

    u, v, a, b, c, opacity = params.index_select(0, entry).unbind(1)
    dx = col.to(params.dtype) + 0.5 - u
    dy = row.to(params.dtype) + 0.5 - v
    q = dx * (a * dx + 2.0 * b * dy) + c * dy * dy
    alpha = (opacity * torch.exp(-0.5 * q)).clamp(max=settings.alpha_max)
    if settings.alpha_min > 0.0:  # the spans hold a few pairs just outside the cutoff (margins)
        alpha = torch.where(alpha >= settings.alpha_min, alpha, torch.zeros_like(alpha))

    # exclusive transmittance per pixel: running sum of log(1 - alpha), reset at each pixel's first pair
    is_first = torch.ones(n_pairs, dtype=torch.bool, device=device)
    is_first[1:] = pixel[1:] != pixel[:-1]
    first_pair = torch.where(is_first, torch.arange(n_pairs, device=device), 0).cummax(0).values
    log_keep = torch.log1p(-alpha.double())
    inclusive = torch.cumsum(log_keep, 0)
    exclusive = inclusive - log_keep
    start = exclusive.index_select(0, first_pair)
    weight = torch.exp(exclusive - start).to(alpha.dtype) * alpha
    if settings.min_transmittance > 0.0:
        with torch.no_grad():
            alive = (inclusive - start) > math.log(settings.min_transmittance)
        weight = torch.where(alive, weight, torch.zeros_like(weight))
    return out.index_add(0, pixel, weight[:, None] * features.index_select(0, entry))


def render_torch(
    gaussians: Gaussians,
    K: Tensor,
    w2c: Tensor,
    width: int,
    height: int,
    settings: RasterSettings,
    *,
    max_pairs: int | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> RenderOutput:
    """Render C cameras with the packed compositor (no background: :func:`avat3r_core.render.render` adds it).

    max_pairs: raise :class:`PairBudgetError` (naming the count) before building more pairs than this.
    chunk_pairs: pairs per band of rows; bands are checkpointed under autograd (memory ~ one band).
    """
    if chunk_pairs < 1:
        raise ValueError(f"chunk_pairs must be >= 1, got {chunk_pairs}")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0 or None, got {max_pairs}")
    n_cams, n_rows = K.shape[0], K.shape[0] * height
    splats = project(gaussians, K, w2c, width, height, settings)
    row_spans = spans(splats, width)
    total, bands = plan_bands(row_spans, n_rows, chunk_pairs)
    if max_pairs is not None and total > max_pairs:
        raise PairBudgetError(total, max_pairs)

    params, features = splats.params, splats.features
    if not bands:  # nothing visible; stay in the graph so that a loss still back-propagates (zeros)
        acc = (params.sum() + features.sum()) * 0.0
        acc = acc + torch.zeros(n_rows * width, 5, dtype=params.dtype, device=params.device)
    elif len(bands) == 1:
        acc = _band(params, features, row_spans, 0, n_rows, width, height, settings)
    else:
        grad = torch.is_grad_enabled() and (params.requires_grad or features.requires_grad)
        parts = []
        for r0, r1 in bands:
            inside = ((row_spans.stacked_row >= r0) & (row_spans.stacked_row < r1)).nonzero().squeeze(1)
            band_spans = row_spans.select(inside)
            if grad:
                args = (params, features, band_spans, r0, r1, width, height, settings)
                parts.append(checkpoint(_band, *args, use_reentrant=False))
            else:
                parts.append(_band(params, features, band_spans, r0, r1, width, height, settings))
        acc = torch.cat(parts, dim=0)
    acc = acc.view(n_cams, height, width, 5).permute(0, 3, 1, 2)
    alpha = acc[:, 3:4].contiguous()
    return RenderOutput(
        rgb=acc[:, :3].contiguous(),
        alpha=alpha,
        depth=acc[:, 4:5] / alpha.clamp_min(1e-10),
        backend="torch",
        pairs=total,
    )

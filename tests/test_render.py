"""Gaussian splatting renderer: the packed torch backend against a dense brute-force compositor written here,
analytic cases, autograd gradient checks, errors, and (GPU only) gsplat against the torch backend.

The brute force shares no code with the backend: it rotates by quaternion products, takes the projection
Jacobian from autograd, evaluates every Gaussian at every pixel centre and composites front to back in a
Python loop, exactly as gsplat's CUDA kernel does per pixel.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from avat3r_core.geometry import look_at_w2c
from avat3r_core.render import (
    BackendUnavailableError,
    Gaussians,
    PairBudgetError,
    RasterSettings,
    render,
    select_backend,
)

# -- the independent reference ------------------------------------------------------------------------


def _quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def _rotation(quats: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) whose columns are the basis vectors rotated by q v q*."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    conj = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)
    columns = []
    for axis in range(3):
        v = torch.zeros_like(q)
        v[:, axis + 1] = 1.0
        columns.append(_quat_mul(_quat_mul(q, v), conj)[:, 1:])
    return torch.stack(columns, dim=-1)


def _brute_force(
    g: Gaussians, K: torch.Tensor, w2c: torch.Tensor, width: int, height: int, s: RasterSettings
):
    """Dense per-pixel reference: (C, 3, H, W) rgb, (C, 1, H, W) alpha and expected depth."""
    rgbs, alphas, depths = [], [], []
    v, u = torch.meshgrid(
        torch.arange(height, dtype=g.dtype) + 0.5, torch.arange(width, dtype=g.dtype) + 0.5, indexing="ij"
    )
    pix = torch.stack([u, v], dim=-1)  # (H, W, 2)
    rot_g = _rotation(g.quats)
    cov_world = rot_g @ torch.diag_embed(g.scales**2) @ rot_g.transpose(1, 2)
    for cam in range(K.shape[0]):
        fx, fy, cx, cy = (float(K[cam, i, j]) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
        R, t = w2c[cam, :3, :3], w2c[cam, :3, 3]

        def proj(p: torch.Tensor, fx=fx, fy=fy, cx=cx, cy=cy) -> torch.Tensor:
            return torch.stack([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])

        lim = (
            ((width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx),
            ((height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy),
        )
        rgb = torch.zeros(height, width, 3, dtype=g.dtype)
        acc_alpha = torch.zeros(height, width, dtype=g.dtype)
        acc_depth = torch.zeros(height, width, dtype=g.dtype)
        T = torch.ones(height, width, dtype=g.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        p_cam = g.means @ R.T + t
        for i in torch.argsort(p_cam[:, 2], stable=True).tolist():
            p, z = p_cam[i], float(p_cam[i, 2])
            if not (s.near_plane <= z <= s.far_plane) or float(g.opacities[i]) < s.alpha_min:
                continue
            clamped = torch.stack(
                [
                    z * torch.clamp(p[0] / z, -lim[0][1], lim[0][0]),
                    z * torch.clamp(p[1] / z, -lim[1][1], lim[1][0]),
                    p[2],
                ]
            )
            J = torch.autograd.functional.jacobian(proj, clamped)
            cov2d = J @ R @ cov_world[i] @ R.T @ J.T + s.eps2d * torch.eye(2, dtype=g.dtype)
            d = pix - proj(p)
            q = torch.einsum("hwi,ij,hwj->hw", d, torch.linalg.inv(cov2d), d)
            alpha = torch.clamp(g.opacities[i] * torch.exp(-0.5 * q), max=s.alpha_max)
            hit = (alpha >= s.alpha_min) & ~done
            next_T = T * (1 - alpha)
            stop = hit & (next_T <= s.min_transmittance)
            done |= stop
            hit &= ~stop
            w = torch.where(hit, T * alpha, torch.zeros_like(T))
            rgb += w[..., None] * g.colors[i]
            acc_alpha += w
            acc_depth += w * z
            T = torch.where(hit, next_T, T)
        rgbs.append(rgb.permute(2, 0, 1))
        alphas.append(acc_alpha[None])
        depths.append((acc_depth / acc_alpha.clamp_min(1e-10))[None])
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


# -- scenes ---------------------------------------------------------------------------------------------


def _cameras(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Three cameras around the origin, 2 m away, with different and non-square intrinsics (48 x 40)."""
    eyes = [(0.0, 0.0, -2.0), (1.6, -0.4, -1.2), (-1.0, 0.9, 1.5)]
    w2c = np.stack([look_at_w2c(np.array(e), np.zeros(3), np.array([0.0, -1.0, 0.0])) for e in eyes])
    K = np.array(
        [
            [[60.0, 0.0, 24.0], [0.0, 60.0, 20.0], [0.0, 0.0, 1.0]],
            [[45.0, 0.0, 20.3], [0.0, 52.0, 22.7], [0.0, 0.0, 1.0]],
            [[80.0, 0.0, 30.0], [0.0, 70.0, 15.0], [0.0, 0.0, 1.0]],
        ]
    )
    return torch.tensor(K, dtype=dtype), torch.tensor(w2c, dtype=dtype), 48, 40


def _random_scene(seed: int, n: int = 200, dtype: torch.dtype = torch.float64) -> Gaussians:
    """Gaussians around the origin, some partly off-screen, some behind camera 0, a few fully opaque."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen, dtype=dtype) - 0.5) * 2.4
    means[:10] = torch.tensor([0.0, 0.0, -3.0], dtype=dtype) + 0.3 * torch.randn(
        10, 3, generator=gen, dtype=dtype
    )
    scales = torch.exp(torch.empty(n, 3, dtype=dtype).uniform_(np.log(0.005), np.log(0.2), generator=gen))
    opacities = torch.rand(n, generator=gen, dtype=dtype)
    opacities[-40:] = 1.0  # with the larger ones below: stacks that reach the 1e-4 transmittance stop
    means[-40:] *= 0.3
    scales[-40:] = torch.empty(40, 3, dtype=dtype).uniform_(0.04, 0.12, generator=gen)
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=gen, dtype=dtype) * 3.0,
        scales=scales,
        opacities=opacities,
        colors=torch.rand(n, 3, generator=gen, dtype=dtype),
    )


def _single(mean, scale, opacity, color, dtype=torch.float64) -> Gaussians:
    means = torch.tensor(mean, dtype=dtype).view(-1, 3)
    n = means.shape[0]
    return Gaussians(
        means=means,
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype).repeat(n, 1),
        scales=torch.tensor(scale, dtype=dtype).view(n, 1).expand(n, 3).clone(),
        opacities=torch.tensor(opacity, dtype=dtype).view(n),
        colors=torch.tensor(color, dtype=dtype).view(n, 3),
    )


# the optical axis passes through the centre of pixel (16, 16)
HEAD_ON_K = torch.tensor([[[50.0, 0.0, 16.5], [0.0, 50.0, 16.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
IDENTITY = torch.eye(4, dtype=torch.float64)[None]


# -- against the brute force ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_backend_matches_dense_brute_force(seed: int) -> None:
    g = _random_scene(seed)
    K, w2c, width, height = _cameras()
    settings = RasterSettings()
    out = render(g, K, w2c, width, height, backend="torch")
    rgb, alpha, depth = _brute_force(g, K, w2c, width, height, settings)
    assert out.backend == "torch" and out.rgb.shape == (3, 3, height, width)
    # a non-trivial scene: empty pixels, and pixels where the transmittance stop changes the colour
    assert float((alpha == 0).double().mean()) > 1e-3
    no_stop = render(
        g, K, w2c, width, height, backend="torch", settings=RasterSettings(min_transmittance=0.0)
    )
    assert float((no_stop.rgb - out.rgb).abs().amax()) > 1e-2
    torch.testing.assert_close(out.rgb, rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=1e-5, rtol=0)


def test_brute_force_match_with_other_settings_and_chunks() -> None:
    """No early stop, a lower cutoff and clamp, a thicker dilation; bands of rows change nothing."""
    g = _random_scene(2, n=120)
    K, w2c, width, height = _cameras()
    settings = RasterSettings(
        eps2d=1.0, alpha_min=0.02, alpha_max=0.95, min_transmittance=0.0, near_plane=1.0
    )
    whole = render(g, K, w2c, width, height, backend="torch", settings=settings)
    banded = render(g, K, w2c, width, height, backend="torch", settings=settings, chunk_pairs=500)
    rgb, alpha, _ = _brute_force(g, K, w2c, width, height, settings)
    torch.testing.assert_close(whole.rgb, rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(whole.alpha, alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(banded.rgb, whole.rgb, atol=1e-10, rtol=0)
    assert banded.pairs == whole.pairs


def test_float32_close_to_float64() -> None:
    g = _random_scene(3)
    K, w2c, width, height = _cameras()
    ref = render(g, K, w2c, width, height, backend="torch")
    out = render(g.to(dtype=torch.float32), K.float(), w2c.float(), width, height, backend="torch")
    assert out.rgb.dtype == torch.float32
    diff = (out.rgb.double() - ref.rgb).abs()
    # single pixels may flip at the 1/255 cutoff between float32 and float64 (at most ~1/255 of change)
    assert float(diff.amax()) < 1e-2 and float((diff > 1e-4).double().mean()) < 1e-3


# -- analytic cases -----------------------------------------------------------------------------------


def test_isotropic_gaussian_head_on_peaks_at_its_projected_centre() -> None:
    """On the optical axis, which passes through the centre of pixel (row 12, column 10)."""
    z, scale, opacity, color = 2.0, 0.05, 0.7, (0.2, 0.5, 0.9)
    K = torch.tensor([[[50.0, 0.0, 10.5], [0.0, 50.0, 12.5], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    out = render(_single([(0.0, 0.0, z)], scale, opacity, color), K, IDENTITY, 32, 32)
    lum = out.alpha[0, 0]
    assert divmod(int(torch.argmax(lum)), 32) == (12, 10)
    torch.testing.assert_close(out.rgb[0, :, 12, 10], opacity * torch.tensor(color, dtype=torch.float64))
    # EWA footprint on the axis: sigma² = (f s / z)² + eps2d in both directions
    sigma2 = (50.0 * scale / z) ** 2 + 0.3
    for row, col, d2 in ((12, 11, 1.0), (12, 9, 1.0), (14, 10, 4.0), (13, 11, 2.0)):
        assert float(lum[row, col]) == pytest.approx(opacity * np.exp(-0.5 * d2 / sigma2), rel=1e-9)
    torch.testing.assert_close(out.depth[0, 0][lum > 0], torch.full_like(lum[lum > 0], z))


def test_opaque_front_gaussian_hides_the_one_behind() -> None:
    # listed back to front, so the renderer must sort
    g = _single(
        [(0.0, 0.0, 4.0), (0.0, 0.0, 2.0)], [0.3, 0.3], [0.95, 1.0], [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    )
    out = render(g, HEAD_ON_K, IDENTITY, 32, 32)
    centre = out.rgb[0, :, 16, 16]
    assert float(centre[0]) == pytest.approx(0.999, abs=1e-6)  # alpha is clamped at 0.999
    assert float(centre[1]) == 0.0  # the transmittance stop (1e-4) drops the green Gaussian
    assert float(out.depth[0, 0, 16, 16]) == pytest.approx(2.0)
    swapped = render(
        _single([(0.0, 0.0, 2.0)], [0.3], [0.95], [(0.0, 1.0, 0.0)]), HEAD_ON_K, IDENTITY, 32, 32
    )
    assert float(swapped.rgb[0, 1, 16, 16]) == pytest.approx(0.95)


def test_background_shows_where_alpha_is_zero() -> None:
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)
    g = _single([(-0.4, -0.4, 2.0)], [0.02], [0.8], [(1.0, 1.0, 1.0)])
    plain = render(g, HEAD_ON_K, IDENTITY, 32, 32)
    out = render(g, HEAD_ON_K, IDENTITY, 32, 32, background=bg)
    empty = plain.alpha[0, 0] == 0
    assert float(empty.double().mean()) > 0.9 and bool((~empty).any())
    torch.testing.assert_close(out.rgb[0][:, empty], bg[:, None].expand(3, int(empty.sum())))
    torch.testing.assert_close(out.rgb, plain.rgb + (1 - plain.alpha) * bg.view(1, 3, 1, 1))


def test_gaussians_behind_the_camera_or_absent_render_nothing() -> None:
    means = torch.tensor([(0.0, 0.0, -2.0), (0.1, 0.0, 0.005)], requires_grad=True)  # behind; before near
    g = Gaussians(
        means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.5), torch.ones(2), torch.ones(2, 3)
    )
    for scene in (
        g,
        _single(np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 3)), dtype=torch.float32),
    ):
        out = render(scene, HEAD_ON_K.float(), IDENTITY.float(), 32, 24)
        assert out.rgb.shape == (1, 3, 24, 32) and out.alpha.shape == out.depth.shape == (1, 1, 24, 32)
        assert out.pairs == 0 and not out.rgb.any() and not out.alpha.any() and not out.depth.any()
    out = render(g, HEAD_ON_K.float(), IDENTITY.float(), 32, 24)
    out.rgb.sum().backward()  # a loss on an empty render still back-propagates (zeros)
    assert means.grad is not None and not means.grad.any()


# -- gradients ----------------------------------------------------------------------------------------


def _tiny_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(5)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.15, -0.1, 2.5], [-0.1, 0.12, 3.0]], dtype=torch.float64)
    quats = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    scales = torch.tensor([[0.08, 0.05, 0.06], [0.1, 0.07, 0.12], [0.05, 0.15, 0.09]], dtype=torch.float64)
    opacities = torch.tensor([0.6, 0.5, 0.7], dtype=torch.float64)
    colors = torch.rand(3, 3, generator=gen, dtype=torch.float64)
    return tuple(t.requires_grad_() for t in (means, quats, scales, opacities, colors))


@pytest.mark.parametrize(
    ("chunk_pairs", "fast_mode"),
    [(1 << 20, False), (50, True)],  # one band; checkpointed bands of two rows (recomputed per backward)
)
def test_gradcheck_all_gaussian_fields(chunk_pairs: int, fast_mode: bool) -> None:
    """float64 gradcheck, 8x8 images, two cameras; cutoff and transmittance stop off: the image is smooth."""
    K = torch.tensor([[20.0, 0.0, 4.0], [0.0, 20.0, 4.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(
        2, 3, 3
    )
    w2c = torch.tensor(
        np.stack(
            [np.eye(4), look_at_w2c(np.array([0.5, 0.2, -0.3]), np.array([0, 0, 2.5]), np.array([0, -1, 0]))]
        )
    )
    settings = RasterSettings(alpha_min=0.0, min_transmittance=0.0)

    def fn(*fields: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = render(
            Gaussians(*fields), K, w2c, 8, 8, backend="torch", settings=settings, chunk_pairs=chunk_pairs
        )
        return out.rgb, out.alpha, out.depth

    assert torch.autograd.gradcheck(fn, _tiny_inputs(), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode)


def test_chunked_backward_equals_unchunked() -> None:
    K, w2c, width, height = _cameras()
    grads = []
    for chunk in (1 << 20, 400):
        g = _random_scene(4, n=80)
        fields = [getattr(g, f).requires_grad_() for f in ("means", "quats", "scales", "opacities", "colors")]
        out = render(Gaussians(*fields), K, w2c, width, height, backend="torch", chunk_pairs=chunk)
        (out.rgb * torch.linspace(0, 1, width, dtype=torch.float64)).sum().add(out.depth.sum()).backward()
        grads.append([f.grad for f in fields])
    for a, b in zip(*grads, strict=True):
        assert torch.isfinite(a).all() and a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


# -- errors and backend selection -----------------------------------------------------------------------


def test_bad_shapes_name_the_argument() -> None:
    g = _single([(0.0, 0.0, 2.0)], [0.1], [0.5], [(1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match=r"Gaussians\.quats must have shape \(N, 4\)"):
        Gaussians(g.means, g.quats[:, :3], g.scales, g.opacities, g.colors)
    with pytest.raises(ValueError, match=r"Gaussians\.opacities"):
        Gaussians(g.means, g.quats, g.scales, g.opacities[:, None], g.colors)
    with pytest.raises(ValueError, match=r"Gaussians\.colors is torch\.float32 .* one dtype"):
        Gaussians(g.means, g.quats, g.scales, g.opacities, g.colors.float())
    with pytest.raises(ValueError, match=r"^K must have shape"):
        render(g, HEAD_ON_K[0], IDENTITY, 32, 32)
    with pytest.raises(ValueError, match=r"^w2c must have shape"):
        render(g, HEAD_ON_K, IDENTITY[:, :3], 32, 32)
    with pytest.raises(ValueError, match="same number of cameras"):
        render(g, HEAD_ON_K.expand(2, 3, 3), IDENTITY, 32, 32)
    with pytest.raises(ValueError, match=r"^height"):
        render(g, HEAD_ON_K, IDENTITY, 32, 0)
    with pytest.raises(ValueError, match=r"^background"):
        render(g, HEAD_ON_K, IDENTITY, 32, 32, background=torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be one of"):
        render(g, HEAD_ON_K, IDENTITY, 32, 32, backend="cuda")
    with pytest.raises(ValueError, match="alpha_max"):
        RasterSettings(alpha_max=1.0)


def test_gsplat_backend_needs_cuda_tensors() -> None:
    g = _single([(0.0, 0.0, 2.0)], [0.1], [0.5], [(1.0, 1.0, 1.0)])
    with pytest.raises(
        BackendUnavailableError, match="'gsplat' is unavailable: gsplat renders CUDA tensors only"
    ):
        render(g, HEAD_ON_K, IDENTITY, 32, 32, backend="gsplat")
    assert select_backend(g, "auto") == "torch"
    assert render(g, HEAD_ON_K, IDENTITY, 32, 32).backend == "torch"


def test_pair_budget_error_names_the_count() -> None:
    g = _random_scene(0, n=50)
    K, w2c, width, height = _cameras()
    pairs = render(g, K, w2c, width, height).pairs
    assert pairs is not None and pairs > 100
    with pytest.raises(
        PairBudgetError, match=rf"^render: {pairs} \(Gaussian, pixel\) pairs exceed max_pairs=100"
    ):
        render(g, K, w2c, width, height, max_pairs=100)
    assert render(g, K, w2c, width, height, max_pairs=pairs).pairs == pairs


# -- GPU: gsplat and the torch backend on CUDA ----------------------------------------------------------

_CUDA = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
def test_torch_backend_on_cuda_matches_cpu() -> None:
    g = _random_scene(6, n=300, dtype=torch.float32)
    K, w2c, width, height = _cameras(torch.float32)
    cpu = render(g, K, w2c, width, height, backend="torch")
    gpu = render(g.to("cuda"), K.cuda(), w2c.cuda(), width, height, backend="torch")
    diff = (gpu.rgb.cpu() - cpu.rgb).abs()
    assert float(diff.amax()) < 1e-2 and float((diff > 1e-4).float().mean()) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not _CUDA, reason="needs a CUDA device")
@pytest.mark.skipif(
    importlib.util.find_spec("gsplat") is None, reason="needs gsplat (pip install 'gsplat>=1.5')"
)
def test_gsplat_matches_torch_backend_on_cuda() -> None:
    """Same images and colour/opacity gradients from both backends (float32 on the GPU).

    gsplat's fast-math expf can put a single (Gaussian, pixel) pair on the other side of the 1/255 cutoff
    than torch's exp; that changes one pixel by up to ~1/255, hence the two-level tolerance.
    """
    g = _random_scene(7, n=300, dtype=torch.float32).to("cuda")
    K, w2c, _, _ = _cameras(torch.float32)
    K, w2c = K.cuda(), w2c.cuda()
    background = torch.tensor([0.1, 0.2, 0.3], device="cuda")
    outs, grads = {}, {}
    for backend in ("gsplat", "torch"):
        fields = [getattr(g, f).detach().clone().requires_grad_() for f in Gaussians.__dataclass_fields__]
        out = render(Gaussians(*fields), K, w2c, 64, 56, background=background, backend=backend)
        assert out.backend == backend
        weights = torch.rand(out.rgb.shape, generator=torch.Generator("cuda").manual_seed(1), device="cuda")
        (out.rgb * weights).sum().backward()
        outs[backend], grads[backend] = out, {"opacities": fields[3].grad, "colors": fields[4].grad}
    for name in ("rgb", "alpha"):
        diff = (getattr(outs["gsplat"], name) - getattr(outs["torch"], name)).abs()
        assert float(diff.amax()) < 1e-2, name
        assert float((diff > 1e-4).float().mean()) < 1e-3, name
    covered = outs["torch"].alpha > 0.5
    torch.testing.assert_close(
        outs["gsplat"].depth[covered], outs["torch"].depth[covered], rtol=1e-3, atol=1e-3
    )
    for name, grad in grads["torch"].items():
        scale = float(grad.abs().amax())
        assert float((grads["gsplat"][name] - grad).abs().amax()) < 1e-2 * scale, name

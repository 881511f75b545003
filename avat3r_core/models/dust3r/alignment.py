"""Global alignment of pairwise DUSt3R pointmaps with known, fixed cameras.

DUSt3R predicts, for every ordered pair (i, j), both views' pointmaps in view i's camera frame and up to an
unknown scale. Our captures are calibrated, so -- like upstream's ``PointCloudOptimizer`` with
``preset_pose``/``preset_focal``/``preset_principal_point`` and ``init='known_poses'`` -- the cameras are held
fixed and only two things are optimised:

* one depth map per view (log-depth per pixel, so depths stay positive); a view's 3D points are its pixel
  centres unprojected through its *known* camera, so they always lie on the calibrated rays;
* one similarity per pair (rotation, translation, log-scale) that carries the pair's pointmaps into the world.

Loss (upstream's ``dist='l1'``, ``conf='log'``): for every pair e = (i, j)::

    sum_pix log(conf_1) * || S_e(pts3d_1) - X_i ||  +  sum_pix log(conf_2) * || S_e(pts3d_2_in_1) - X_j ||

normalised by the total pixel count of all pairs (per side, as upstream's ``total_area_i/j``). ``||.||`` is
the Euclidean norm (not squared), which is robust to the odd bad pixel. Because the cameras fix the frame
and the metric scale, no scale normalisation of the pair scales is applied: the result is in the cameras'
world frame (head-centric in this pipeline) and in metres.

Deviations from upstream, and why:

* Initialisation: instead of PnP per edge plus the best edge's depth, each pair similarity is fitted directly
  to the known rays of both views (Gauss-Newton on point-to-ray distances, IRLS-weighted to match the L1
  loss), starting from view i's camera-to-world with a closed-form scale. Depth maps start as the
  confidence-weighted mean over all pairs of the aligned points' depths. This puts Adam next to the optimum.
* The pair rotation is a rotation-vector update on the initial rotation, and rotation and scale act about the
  pair's (weighted) pointmap centroid rather than the pair-frame origin, which lies ~1 m away at camera i;
  this decouples rotation from translation and keeps Adam's per-parameter steps comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avat3r_core.errors import Avat3rError
from avat3r_core.geometry.cameras import Camera, pixel_centers

__all__ = ["AlignmentDivergedError", "AlignmentResult", "align_known_cameras"]

_KEYS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")
_LR_MIN = 1e-6  # end of the cosine schedule, as upstream's compute_global_alignment
_ADAM_BETAS = (0.9, 0.9)  # upstream's choice
_INIT_GN_STEPS = 10  # Gauss-Newton steps of the per-pair initialisation
_INIT_MAX_PIXELS = 20_000  # per view and pair; the 7-parameter fit needs far fewer than a 512x384 image has


class AlignmentDivergedError(Avat3rError):
    """The loss or a parameter became NaN/inf; the message says at which iteration."""


@dataclass(frozen=True)
class AlignmentResult:
    """Fused per-view position maps in the cameras' world frame.

    ``points``: (N, H, W, 3) float32 world coordinates in metres (head-centric when the cameras are):
    pixel (row i, column j) of view n is its pixel centre ``(j + 0.5, i + 0.5)`` unprojected through
    ``cameras[n]`` at the optimised depth, so every point lies exactly on its calibrated ray.

    ``confidence``: (N, H, W) float32, upstream's ``im_conf``: for each view and pixel, the *maximum raw
    DUSt3R confidence* (``1 + exp(c)``, >= 1) that any pair gave that pixel, whether the view was the
    pair's first view (``conf_1``) or second (``conf_2``). It is not re-estimated by the alignment. A
    downstream threshold applies to this raw value, like upstream's ``get_masks()`` which keeps
    ``im_conf > min_conf_thr`` (3 by default); the loss weighted pixels by ``log(conf)`` instead.

    ``loss``: the loss of the returned parameters. ``iterations``: the Adam steps taken.
    """

    points: np.ndarray
    confidence: np.ndarray
    loss: float
    iterations: int


# ---------------------------------------------------------------------------------------------- validation
def _as_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"align_known_cameras: predictions['{name}'] is not a numeric array ({exc})"
        ) from exc


def _validate(
    predictions: Mapping[str, torch.Tensor | np.ndarray],
    pairs: Sequence[tuple[int, int]],
    cameras: Sequence[Camera],
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]], int, int]:
    """Check shapes, indices and camera sizes; return float64 CPU tensors, pairs, H and W."""
    missing = [k for k in _KEYS if k not in predictions]
    if missing:
        raise ValueError(f"align_known_cameras: predictions lack keys {missing} (need {list(_KEYS)})")
    pred = {k: _as_tensor(predictions[k], k) for k in _KEYS}
    p1 = pred["pts3d_1"]
    if p1.ndim != 4 or p1.shape[-1] != 3:
        raise ValueError(
            f"align_known_cameras: predictions['pts3d_1'] must be (P, H, W, 3), got {tuple(p1.shape)}"
        )
    n_pairs, height, width = int(p1.shape[0]), int(p1.shape[1]), int(p1.shape[2])
    expected = {
        "pts3d_1": (n_pairs, height, width, 3),
        "conf_1": (n_pairs, height, width),
        "pts3d_2_in_1": (n_pairs, height, width, 3),
        "conf_2": (n_pairs, height, width),
    }
    for key, shape in expected.items():
        if tuple(pred[key].shape) != shape:
            raise ValueError(
                f"align_known_cameras: predictions['{key}'] must have shape {shape} "
                f"(from pts3d_1), got {tuple(pred[key].shape)}"
            )
    if n_pairs == 0:
        raise ValueError("align_known_cameras: no pairs to align")
    try:
        pair_list = [(int(i), int(j)) for i, j in pairs]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"align_known_cameras: pairs must be (i, j) integer tuples ({exc})") from exc
    if len(pair_list) != n_pairs:
        raise ValueError(
            f"align_known_cameras: {len(pair_list)} pairs but predictions hold {n_pairs} (one row per pair)"
        )
    n_views = len(cameras)
    bad = [p for p in pair_list if not (0 <= p[0] < n_views and 0 <= p[1] < n_views)]
    if bad:
        raise ValueError(f"align_known_cameras: pair indices out of range for {n_views} cameras: {bad[:5]}")
    same = [p for p in pair_list if p[0] == p[1]]
    if same:
        raise ValueError(f"align_known_cameras: pairs of a view with itself are not allowed: {same[:5]}")
    unused = sorted(set(range(n_views)) - {v for p in pair_list for v in p})
    if unused:
        raise ValueError(f"align_known_cameras: views {unused} are in no pair, so their depth is undefined")
    for n, cam in enumerate(cameras):
        if not isinstance(cam, Camera):
            raise ValueError(f"align_known_cameras: cameras[{n}] is a {type(cam).__name__}, not a Camera")
        if (cam.width, cam.height) != (width, height):
            raise ValueError(
                f"align_known_cameras: cameras[{n}] is {cam.width}x{cam.height} but the predictions are "
                f"{width}x{height}; use camera.resize({width}, {height}) (or the crop that made the images)"
            )
    return pred, pair_list, height, width


# ---------------------------------------------------------------------------------------------- geometry
def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices ``[v]_x``."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )


def _so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of rotation vectors (..., 3); matrix_exp is exact and differentiable at zero."""
    return torch.linalg.matrix_exp(_skew(omega))


def _camera_rays(cameras: Sequence[Camera], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame centres (N, 3) and per-pixel ray directions (N, H, W, 3) scaled to unit camera z.

    With this scaling, ``centre + z * ray`` is the point at camera-space depth ``z``, exactly what
    :meth:`Camera.unproject` computes, so the returned points match the Camera conventions.
    """
    uv = pixel_centers(width, height).reshape(-1, 2)
    homo = np.concatenate([uv, np.ones((uv.shape[0], 1))], axis=1)
    centres, rays = [], []
    for cam in cameras:
        cam_dirs = np.linalg.solve(cam.K, homo.T).T  # z == 1
        rays.append((cam_dirs @ cam.R).reshape(height, width, 3))  # R^T d, row-vector form
        centres.append(cam.center)
    return torch.as_tensor(np.stack(centres)), torch.as_tensor(np.stack(rays))


def _depth_along(points: torch.Tensor, centre: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Camera-space z of world points: the depth whose unprojection is closest to the point on its ray
    (for rays with unit camera z this is also the foot of the perpendicular along the optical axis)."""
    return (points - centre) @ forward


# ---------------------------------------------------------------------------------------------- init
def _closed_form_scale(
    pts_j: torch.Tensor, w_j: torch.Tensor, cam_i: Camera, cam_j: Camera, rays_j_cam: torch.Tensor
) -> float:
    """Scale s so that ``c2w_i(s * P)`` of view j's points lies on camera j's rays (least squares).

    In camera j's frame the point is ``s * a + b`` with ``a = R_ji P`` and ``b = t_ji``; lying on the ray
    ``d`` means ``d x (s a + b) = 0``, linear in s. View i's own points cannot fix the scale: all of its
    rays pass through its centre.
    """
    rel = cam_j.w2c @ cam_i.c2w
    rot = torch.as_tensor(rel[:3, :3])
    trans = torch.as_tensor(rel[:3, 3])
    a = pts_j @ rot.T
    ca = torch.linalg.cross(rays_j_cam, a, dim=-1)
    cb = torch.linalg.cross(rays_j_cam, trans.expand_as(a), dim=-1)
    num = -(w_j * (ca * cb).sum(-1)).sum()
    den = (w_j * (ca * ca).sum(-1)).sum()
    scale = float(num / den) if float(den) > 0 else float("nan")
    return scale if math.isfinite(scale) and scale > 0 else 1.0


def _fit_pair(
    pts: torch.Tensor,
    weights: torch.Tensor,
    centres: torch.Tensor,
    rays: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    log_scale: torch.Tensor,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss-Newton (IRLS for the L1-norm loss) fit of ``X = s R P + T`` to known rays.

    ``pts`` (M, 3) centred pair-frame points, ``centres``/``rays`` (M, 3) the ray of each point's pixel.
    The residual is the point-to-ray offset ``(I - r r^T)(X - c)`` with unit ``r``; right-multiplied
    rotation updates ``R exp(w)`` give ``dX/dw = -s R [P]_x``, ``dX/dT = I``, ``dX/dlog s = s R P``.
    """
    unit = rays / rays.norm(dim=-1, keepdim=True)
    proj = torch.eye(3, dtype=pts.dtype) - unit[:, :, None] * unit[:, None, :]  # (M, 3, 3)
    for _ in range(_INIT_GN_STEPS):
        scale = log_scale.exp()
        srp = scale * pts @ rotation.T
        resid = (proj @ (srp + translation - centres)[:, :, None])[:, :, 0]
        irls = weights / resid.norm(dim=-1).clamp_min(delta)
        jac = torch.empty(pts.shape[0], 3, 7, dtype=pts.dtype)
        jac[:, :, :3] = -scale * rotation @ _skew(pts)
        jac[:, :, 3:6] = torch.eye(3, dtype=pts.dtype)
        jac[:, :, 6] = srp
        jac = proj @ jac
        jtj = torch.einsum("m,mai,maj->ij", irls, jac, jac)
        jtr = torch.einsum("m,mai,ma->i", irls, jac, resid)
        damp = 1e-9 * torch.diagonal(jtj).mean() * torch.eye(7, dtype=pts.dtype)
        step = -torch.linalg.solve(jtj + damp, jtr)
        if not bool(torch.all(torch.isfinite(step))):
            break
        rotation = rotation @ _so3_exp(step[:3])
        translation = translation + step[3:6]
        log_scale = log_scale + step[6]
    return rotation, translation, log_scale


def _subsample(mask: torch.Tensor, limit: int) -> torch.Tensor:
    """Flat indices of at most ``limit`` True pixels, evenly strided (deterministic)."""
    idx = torch.nonzero(mask.reshape(-1)).squeeze(1)
    if idx.numel() > limit:
        idx = idx[torch.linspace(0, idx.numel() - 1, limit, dtype=torch.float64).round().long()]
    return idx


# ---------------------------------------------------------------------------------------------- main
def pair_tensors(
    pred: Mapping[str, torch.Tensor], pair_list: Sequence[tuple[int, int]], n_views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairwise predictions as the alignments use them (known and free cameras alike).

    Returns points (P, 2, HW, 3) and confidences (P, 2, HW) of both views of each pair, the loss weights
    log(conf) (upstream's conf='log'; DUSt3R's conf is >= 1, the clamp guards other producers against
    negatives) and each view's best confidence over its pairs (N, HW, at least 1).
    """
    n_pairs, height, width = (int(s) for s in pred["pts3d_1"].shape[:3])
    n_pix = height * width
    pts = torch.stack([pred["pts3d_1"], pred["pts3d_2_in_1"]], 1).reshape(n_pairs, 2, n_pix, 3)
    conf = torch.stack([pred["conf_1"], pred["conf_2"]], 1).reshape(n_pairs, 2, n_pix)
    weights = conf.clamp_min(1.0).log()
    im_conf = torch.ones(n_views, n_pix, dtype=torch.float64)
    for p, (i, j) in enumerate(pair_list):
        im_conf[i] = torch.maximum(im_conf[i], conf[p, 0])
        im_conf[j] = torch.maximum(im_conf[j], conf[p, 1])
    return pts, conf, weights, im_conf


def minimise_cosine_adam(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    iterations: int,
    lr: float,
    *,
    what: str,
    after_step: Callable[[], None] | None = None,
) -> None:
    """Upstream's global-alignment optimiser: Adam (betas 0.9, 0.9) with a cosine schedule from lr to 1e-6.

    Shared by the known-camera and the free-camera alignment. A non-finite loss or parameter raises
    AlignmentDivergedError naming `what` and the iteration, instead of returning garbage geometry.
    `after_step` runs after each step (e.g. clamping a parameter, under no_grad).
    """
    optimizer = torch.optim.Adam(params, lr=lr, betas=_ADAM_BETAS)
    for it in range(iterations):
        t = it / max(iterations, 1)
        for group in optimizer.param_groups:
            group["lr"] = _LR_MIN + (lr - _LR_MIN) * 0.5 * (1.0 + math.cos(math.pi * t))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        if not bool(torch.isfinite(loss)):
            raise AlignmentDivergedError(f"{what}: loss became {float(loss.detach())} at iteration {it}")
        loss.backward()
        optimizer.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
        if not all(bool(torch.all(torch.isfinite(q))) for q in params):
            raise AlignmentDivergedError(f"{what}: parameters became non-finite after iteration {it}")


def align_known_cameras(
    predictions: Mapping[str, torch.Tensor | np.ndarray],
    pairs: Sequence[tuple[int, int]],
    cameras: Sequence[Camera],
    *,
    iterations: int = 300,
    lr: float = 0.01,
    min_conf: float = 3.0,
    device: str = "cpu",
    seed: int = 0,
) -> AlignmentResult:
    """Fuse pairwise DUSt3R pointmaps into per-view world position maps with the cameras held fixed.

    ``predictions`` is :func:`predict_pairs`' output for ``pairs`` (row p is pair ``pairs[p]``);
    ``cameras[n]`` must describe view n *at the prediction size* (W x H); poses, focal lengths and
    principal points are used as given and never changed. ``min_conf`` (raw DUSt3R confidence, like
    upstream's ``min_conf_thr``) selects the pixels the per-pair initial fit uses (all pixels if fewer
    than 16 pass); the Adam loss weights every pixel by ``log(conf)``. Adam runs ``iterations`` steps with
    a cosine schedule from ``lr`` to 1e-6, betas (0.9, 0.9), as upstream. The computation has no random
    parts; ``seed`` seeds a local generator only so that the call stays reproducible if one is ever
    needed, and identical inputs give identical outputs on the same device.

    Raises ValueError for malformed inputs (naming the offending key, pair or camera) and
    :class:`AlignmentDivergedError` when the loss or parameters become non-finite (e.g. NaN predictions).
    """
    if iterations < 0:
        raise ValueError(f"align_known_cameras: iterations must be >= 0, got {iterations}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"align_known_cameras: lr must be positive, got {lr}")
    pred, pair_list, height, width = _validate(predictions, pairs, cameras)
    torch.Generator().manual_seed(seed)  # reserved; nothing below draws random numbers
    n_views, n_pairs, n_pix = len(cameras), len(pair_list), height * width

    for key in _KEYS:
        if not bool(torch.all(torch.isfinite(pred[key]))):
            bad = sorted({pair_list[p] for p in torch.nonzero(~torch.isfinite(pred[key]))[:, 0].tolist()})
            raise AlignmentDivergedError(
                f"align_known_cameras: non-finite values in predictions['{key}'] for pairs {bad[:5]}; "
                "the loss is not finite at iteration 0"
            )

    ei = torch.tensor([i for i, _ in pair_list])
    ej = torch.tensor([j for _, j in pair_list])
    centres, rays = _camera_rays(cameras, height, width)  # float64
    forwards = torch.as_tensor(np.stack([cam.w2c[2, :3] for cam in cameras]))
    pts, conf, weights, im_conf = pair_tensors(pred, pair_list, n_views)

    # Rotation and scale act about each pair's weighted centroid (module docstring says why).
    wsum = weights.sum((1, 2)).clamp_min(1e-12)
    pivots = (weights[..., None] * pts).sum((1, 2)) / wsum[:, None]
    pivots = torch.where(weights.sum((1, 2))[:, None] > 0, pivots, pts.mean((1, 2)))
    centred = pts - pivots[:, None, None, :]

    # ---- initial pair similarities: closed-form scale from c2w_i, then Gauss-Newton to both views' rays.
    scene_scale = float(torch.linalg.norm(centres - centres.mean(0), dim=-1).mean()) or 1.0
    delta = 1e-3 * scene_scale
    rot0, trans0, logs0 = [], [], []
    for p, (i, j) in enumerate(pair_list):
        fit_w = weights[p] * (conf[p] > min_conf)
        if int((fit_w > 0).sum()) < 16:
            fit_w = weights[p] + 1e-6
        cam_i, cam_j = cameras[i], cameras[j]
        sel_j = _subsample(fit_w[1] > 0, _INIT_MAX_PIXELS)
        rays_j_cam = rays[j].reshape(-1, 3)[sel_j] @ torch.as_tensor(cam_j.R).T
        scale = _closed_form_scale(pts[p, 1, sel_j], fit_w[1, sel_j], cam_i, cam_j, rays_j_cam)
        rotation = torch.as_tensor(cam_i.c2w[:3, :3])
        translation = torch.as_tensor(cam_i.c2w[:3, 3]) + scale * rotation @ pivots[p]
        sel_i = _subsample(fit_w[0] > 0, _INIT_MAX_PIXELS)
        rotation, translation, log_scale = _fit_pair(
            torch.cat([centred[p, 0, sel_i], centred[p, 1, sel_j]]),
            torch.cat([fit_w[0, sel_i], fit_w[1, sel_j]]),
            torch.cat([centres[i].expand(len(sel_i), 3), centres[j].expand(len(sel_j), 3)]),
            torch.cat([rays[i].reshape(-1, 3)[sel_i], rays[j].reshape(-1, 3)[sel_j]]),
            rotation,
            translation,
            torch.tensor(math.log(scale), dtype=torch.float64),
            delta,
        )
        rot0.append(rotation)
        trans0.append(translation)
        logs0.append(log_scale)
    rot0_t, trans0_t, logs0_t = torch.stack(rot0), torch.stack(trans0), torch.stack(logs0)

    # ---- initial depths: confidence-weighted mean over every pair that sees the view.
    aligned = logs0_t.exp()[:, None, None, None] * centred @ rot0_t[:, None].transpose(-1, -2)
    aligned = aligned + trans0_t[:, None, None, :]
    depth_num = torch.zeros(n_views, n_pix, dtype=torch.float64)
    depth_den = torch.zeros(n_views, n_pix, dtype=torch.float64)
    for side, views in ((0, ei), (1, ej)):
        z = torch.einsum("pmk,pk->pm", aligned[:, side] - centres[views][:, None], forwards[views])
        w = weights[:, side] + 1e-6
        depth_num.index_add_(0, views, w * z)
        depth_den.index_add_(0, views, w)
    depth0 = depth_num / depth_den
    positive = depth0[depth0 > 0]
    floor = 1e-3 * (float(positive.median()) if positive.numel() else scene_scale)
    depth0 = depth0.clamp_min(floor)

    # ---- Adam on log-depths and pair similarities (float32 on the target device).
    dev = torch.device(device)
    f32 = {"dtype": torch.float32, "device": dev}
    log_depth = depth0.log().to(**f32).requires_grad_(True)
    omega = torch.zeros(n_pairs, 3, **f32, requires_grad=True)
    trans = trans0_t.to(**f32).requires_grad_(True)
    log_scale = logs0_t.to(**f32).requires_grad_(True)
    rot_base = rot0_t.to(**f32)
    centred_d, weights_d = centred.to(**f32), weights.to(**f32)
    centres_d, rays_d = centres.to(**f32), rays.reshape(n_views, n_pix, 3).to(**f32)
    area = float(n_pairs * n_pix)

    def loss_fn() -> torch.Tensor:
        world = centres_d[:, None, :] + log_depth.exp()[..., None] * rays_d  # (N, HW, 3)
        rotation = rot_base @ _so3_exp(omega)
        moved = log_scale.exp()[:, None, None, None] * (centred_d @ rotation[:, None].transpose(-1, -2))
        moved = moved + trans[:, None, None, :]
        # Per-view basic indexing, not a gather: the backward of advanced indexing scatter-adds with
        # threads on CPU, which made identical calls differ in the last bits.
        own = torch.stack([torch.stack([world[i], world[j]]) for i, j in pair_list])  # (P, 2, HW, 3)
        dist = (weights_d * (moved - own).norm(dim=-1)).sum((0, 2)) / area
        return dist[0] + dist[1]

    minimise_cosine_adam(
        [log_depth, omega, trans, log_scale], loss_fn, iterations, lr, what="align_known_cameras"
    )

    with torch.no_grad():
        final = loss_fn()
        if not bool(torch.isfinite(final)):
            raise AlignmentDivergedError(
                f"align_known_cameras: loss became {float(final)} at iteration {iterations}"
            )
        world = centres_d[:, None, :] + log_depth.exp()[..., None] * rays_d
    return AlignmentResult(
        points=world.reshape(n_views, height, width, 3).cpu().numpy().astype(np.float32),
        confidence=im_conf.reshape(n_views, height, width).numpy().astype(np.float32),
        loss=float(final),
        iterations=iterations,
    )

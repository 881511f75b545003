"""Global alignment of pairwise DUSt3R pointmaps with unknown cameras: poses and focal lengths recovered.

The uncalibrated counterpart of :mod:`avat3r_core.models.dust3r.alignment`, following upstream DUSt3R's
``PointCloudOptimizer`` (``cloud_opt/optimizer.py``) with ``init='mst'``: photos from phones come with no
calibration, so every view's camera-to-world pose and focal length are optimised together with its depth map
and one similarity per pair.

Parameters (all optimised jointly by Adam, cosine schedule from ``lr`` to 1e-6, betas (0.9, 0.9) as upstream):

* per view: log-depth per pixel; camera-to-world rotation as a quaternion (normalised in the forward pass)
  and the camera centre; log focal length (square pixels, principal point fixed, by default the image centre
  as upstream, since DUSt3R is trained on crops centred on the principal point);
* per pair e = (i, j): a similarity (quaternion, translation, log scale) carrying the pair's pointmaps (both
  in view i's frame) into the world. The pair log-scales enter with their mean subtracted: this fixes the
  global scale gauge (upstream's ``norm_pw_scale``), without it the trivial solution shrinks everything.

Loss (upstream ``dist='l1'``, ``conf='log'``), normalised by the pixel count of all pairs::

    sum_e sum_pix log(conf_1) || S_e(pts3d_1) - X_i ||  +  log(conf_2) || S_e(pts3d_2_in_1) - X_j ||

where ``X_n`` is view n's pixel centres unprojected through its current focal, depth and pose.

Initialisation (upstream's minimum spanning tree):

1. focal of each view from its own pointmap (``pts3d_1`` of the best-scoring pair in which it is first) by
   Weiszfeld iterations on ``|| (u - c) - f (x/z, y/z) ||`` (upstream ``estimate_focal_knowing_depth``);
2. a maximum spanning tree over the pair scores ``mean(conf_1) * mean(conf_2)``; starting from the best edge's
   first view (whose camera frame becomes the world), each tree edge places the new view's points in the world
   by a weighted Umeyama similarity fitted on the known view's points;
3. every view's pose: the Umeyama similarity from its own camera-frame pointmap to its world points (upstream
   uses PnP with the estimated focal here; the similarity needs no RANSAC and gives the depth scale directly);
4. depth maps: the world points' camera-space z; pair similarities: Umeyama of each pair's two pointmaps onto
   the world points of both views. The world is then rescaled so that the pair scales' geometric mean is 1.

Rotation and scale of a pair act about the pair's weighted pointmap centroid (as in the known-camera module),
which decouples them from the translation and keeps Adam's steps comparable. The result is defined up to a
global similarity (the world is the root view's camera frame only at initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from avat3r_core.geometry.cameras import Camera, pixel_centers
from avat3r_core.models.dust3r.alignment import (
    AlignmentDivergedError,
    minimise_cosine_adam,
    pair_tensors,
)

__all__ = [
    "FreeAlignmentResult",
    "align_free_cameras",
    "estimate_focal",
    "focal_range",
    "umeyama",
]

_KEYS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")
_WEISZFELD_STEPS = 10
_FOCAL_LIMITS = (0.2, 10.0)  # x the 60-degree focal max(H, W) / (2 tan 30deg): guards garbage pointmaps


@dataclass(frozen=True)
class FreeAlignmentResult:
    """Recovered cameras and fused pointmaps, all at the prediction size (W x H), in one world frame.

    ``c2w`` (N, 4, 4) camera-to-world (OpenCV axes), ``focal`` (N,) pixels, ``principal`` (N, 2) pixels (the
    pixel-corner convention of :mod:`avat3r_core.geometry.cameras`), ``depth`` (N, H, W) camera-space z,
    ``points`` (N, H, W, 3) the world points of every pixel centre, ``confidence`` (N, H, W) the maximum raw
    DUSt3R confidence any pair gave the pixel (upstream ``im_conf``). The world frame and its scale are
    arbitrary (global similarity); ``init_c2w``/``init_focal`` are the spanning-tree initialisation.
    """

    c2w: np.ndarray
    focal: np.ndarray
    principal: np.ndarray
    depth: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    loss: float
    iterations: int
    init_c2w: np.ndarray
    init_focal: np.ndarray

    def cameras(self) -> list[Camera]:
        """One :class:`Camera` per view at the prediction size."""
        n, height, width = self.depth.shape
        out = []
        for i in range(n):
            K = np.array(
                [
                    [self.focal[i], 0.0, self.principal[i, 0]],
                    [0.0, self.focal[i], self.principal[i, 1]],
                    [0, 0, 1],
                ]
            )
            out.append(Camera(K=K, w2c=_invert(self.c2w[i]), width=width, height=height))
        return out


# ------------------------------------------------------------------------------------------------ helpers
def _invert(c2w: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = c2w[:3, :3].T
    out[:3, 3] = -c2w[:3, :3].T @ c2w[:3, 3]
    return out


def focal_range(height: int, width: int) -> tuple[float, float]:
    """The (min, max) focal in pixels accepted for an image of this size (5x around a 60-degree lens)."""
    base = max(height, width) / (2.0 * math.tan(math.radians(30.0)))
    return _FOCAL_LIMITS[0] * base, _FOCAL_LIMITS[1] * base


def estimate_focal(points: np.ndarray | torch.Tensor, principal: Sequence[float] | None = None) -> float:
    """Focal (pixels) of a pointmap (H, W, 3) in its own camera frame, principal point known (default centre).

    Upstream's ``estimate_focal_knowing_depth(focal_mode='weiszfeld')``: a least-squares start, then
    Weiszfeld iterations minimising ``sum || (u, v) - c - f (x/z, y/z) ||`` over pixels with z > 0 (the
    L1-of-norms fit is robust to the odd bad pixel). The result is clamped to :func:`focal_range`.
    """
    pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
    height, width = int(pts.shape[0]), int(pts.shape[1])
    lo, hi = focal_range(height, width)
    cx, cy = (width / 2.0, height / 2.0) if principal is None else (float(principal[0]), float(principal[1]))
    uv = torch.as_tensor(pixel_centers(width, height)).reshape(-1, 2) - torch.tensor(
        [cx, cy], dtype=torch.float64
    )
    pts = pts.reshape(-1, 3)
    ok = (pts[:, 2] > 1e-12) & torch.isfinite(pts).all(-1)
    if int(ok.sum()) < 2:
        return float(math.sqrt(lo * hi))
    xy = pts[ok, :2] / pts[ok, 2:3]
    uv = uv[ok]
    den = (xy * xy).sum()
    focal = float((xy * uv).sum() / den) if float(den) > 0 else float("nan")
    for _ in range(_WEISZFELD_STEPS):
        if not math.isfinite(focal):
            break
        w = 1.0 / (uv - focal * xy).norm(dim=-1).clamp_min(1e-8)
        num, den = (w[:, None] * xy * uv).sum(), (w[:, None] * xy * xy).sum()
        if float(den) <= 0:
            break
        focal = float(num / den)
    if not math.isfinite(focal):
        return float(math.sqrt(lo * hi))
    return float(min(max(focal, lo), hi))


def umeyama(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None, *, with_scale: bool = True
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Weighted similarity ``dst ~ s R src + t`` (Umeyama 1991): returns (s, R (3, 3), t (3,)), float64."""
    src, dst = src.double().reshape(-1, 3), dst.double().reshape(-1, 3)
    w = torch.ones(len(src), dtype=torch.float64) if weights is None else weights.double().reshape(-1)
    keep = torch.isfinite(src).all(-1) & torch.isfinite(dst).all(-1) & (w > 0)
    src, dst, w = src[keep], dst[keep], w[keep]
    if len(src) < 3 or float(w.sum()) <= 0:
        return 1.0, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.ones(3, dtype=torch.float64)
    if float(torch.det(u) * torch.det(vt)) < 0:
        d[2] = -1.0
    rotation = u @ torch.diag(d) @ vt
    var = float((w * (a * a).sum(-1)).sum())
    scale = float((sig * d).sum() / var) if with_scale and var > 0 else 1.0
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    return scale, rotation, mu_d - scale * rotation @ mu_s


def _quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised here, -> (..., 3, 3) rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _matrix_to_quat(rotation: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation -> (4,) unit quaternion (w, x, y, z), Shepperd's method."""
    m = rotation.double()
    trace = float(m[0, 0] + m[1, 1] + m[2, 2])
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + float(m[i, i] - m[j, j] - m[k, k]), 1e-12))
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    out = torch.tensor([float(v) for v in q], dtype=torch.float64)
    return out / out.norm()


def _spanning_tree(n_views: int, scores: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """Edges (known, new) of a maximum spanning tree, in the order a traversal from the best edge adds them.

    Prim's algorithm on the undirected scores (max over the two orders of a pair); the first edge is the
    best-scoring one, its first view the root.
    """
    undirected: dict[frozenset[int], float] = {}
    for (i, j), s in scores.items():
        key = frozenset((i, j))
        undirected[key] = max(undirected.get(key, -math.inf), s)
    best = max(scores, key=lambda e: scores[e])
    root = best[0]
    known = {root}
    order: list[tuple[int, int]] = []
    while len(known) < n_views:
        candidates = [
            (s, a, b)
            for key, s in undirected.items()
            for a, b in (tuple(key), tuple(key)[::-1])
            if a in known and b not in known
        ]
        if not candidates:
            missing = sorted(set(range(n_views)) - known)
            raise ValueError(
                f"align_free_cameras: views {missing} are not connected to the others by any pair"
            )
        s, a, b = max(candidates, key=lambda c: (c[0], -c[1], -c[2]))
        order.append((a, b))
        known.add(b)
    return [(root, root), *order]


# ------------------------------------------------------------------------------------------------ main
def _validate(
    predictions: Mapping[str, torch.Tensor | np.ndarray], pairs: Sequence[tuple[int, int]], n_views: int
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]], int, int]:
    missing = [k for k in _KEYS if k not in predictions]
    if missing:
        raise ValueError(f"align_free_cameras: predictions lack keys {missing} (need {list(_KEYS)})")
    pred = {k: torch.as_tensor(np.asarray(predictions[k], dtype=np.float64)) for k in _KEYS}
    p1 = pred["pts3d_1"]
    if p1.ndim != 4 or p1.shape[-1] != 3 or p1.shape[0] == 0:
        raise ValueError(
            f"align_free_cameras: pts3d_1 must be (P, H, W, 3) with P >= 1, got {tuple(p1.shape)}"
        )
    n_pairs, height, width = (int(s) for s in p1.shape[:3])
    for key, shape in {
        "conf_1": (n_pairs, height, width),
        "pts3d_2_in_1": (n_pairs, height, width, 3),
        "conf_2": (n_pairs, height, width),
    }.items():
        if tuple(pred[key].shape) != shape:
            raise ValueError(
                f"align_free_cameras: {key} must have shape {shape}, got {tuple(pred[key].shape)}"
            )
    pair_list = [(int(i), int(j)) for i, j in pairs]
    if len(pair_list) != n_pairs:
        raise ValueError(f"align_free_cameras: {len(pair_list)} pairs but predictions hold {n_pairs}")
    bad = [p for p in pair_list if not (0 <= p[0] < n_views and 0 <= p[1] < n_views)]
    if bad:
        raise ValueError(f"align_free_cameras: pair indices out of range for {n_views} views: {bad[:5]}")
    for key in _KEYS:
        if not bool(torch.isfinite(pred[key]).all()):
            raise AlignmentDivergedError(f"align_free_cameras: non-finite values in predictions['{key}']")
    return pred, pair_list, height, width


def _unit_rays(height: int, width: int, principal: torch.Tensor) -> torch.Tensor:
    """(N, HW, 2) pixel-centre offsets from each view's principal point."""
    uv = torch.as_tensor(pixel_centers(width, height)).reshape(1, -1, 2)
    return uv - principal[:, None, :]


def align_free_cameras(
    predictions: Mapping[str, torch.Tensor | np.ndarray],
    pairs: Sequence[tuple[int, int]],
    n_views: int,
    *,
    iterations: int = 300,
    lr: float = 0.01,
    principal: np.ndarray | None = None,
    device: str = "cpu",
) -> FreeAlignmentResult:
    """Recover every view's pose, focal and depth map from pairwise DUSt3R predictions (module docstring).

    ``predictions`` is :func:`predict_pairs`' output for ``pairs``; ``principal`` (N, 2) fixes the principal
    points (default: image centres). With a single view (pairs ``[(0, 0)]``, the image paired with itself, as
    upstream does for one image) the camera is the world frame and only the focal and depths are estimated.
    ``iterations = 0`` returns the spanning-tree initialisation. Raises ValueError for malformed inputs and
    :class:`AlignmentDivergedError` when the loss becomes non-finite.
    """
    if n_views < 1:
        raise ValueError(f"align_free_cameras: need at least one view, got {n_views}")
    if iterations < 0 or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"align_free_cameras: need iterations >= 0 and lr > 0, got {iterations}, {lr}")
    pred, pair_list, height, width = _validate(predictions, pairs, n_views)
    n_pix, n_pairs = height * width, len(pair_list)
    pp = torch.tensor([[width / 2.0, height / 2.0]] * n_views, dtype=torch.float64)
    if principal is not None:
        pp = torch.as_tensor(np.asarray(principal, dtype=np.float64)).reshape(n_views, 2)
    pts, conf, weights, im_conf = pair_tensors(pred, pair_list, n_views)
    scores = {}
    for p, e in enumerate(pair_list):
        scores[e] = max(scores.get(e, -math.inf), float(conf[p, 0].mean() * conf[p, 1].mean()))
    best_row = {e: p for p, e in sorted(enumerate(pair_list), key=lambda pe: scores[pe[1]])}

    # ---- 1. own pointmaps and focal lengths: the best pair in which the view comes first.
    own, own_w, focal = [], [], []
    for v in range(n_views):
        rows = [p for p, (i, _) in enumerate(pair_list) if i == v]
        if not rows:  # only ever second: its points in the partner's frame still give a (rotated) pointmap
            raise ValueError(f"align_free_cameras: view {v} is never the first view of a pair")
        p = max(rows, key=lambda r: scores[pair_list[r]])
        own.append(pts[p, 0])
        own_w.append(weights[p, 0])
        focal.append(estimate_focal(pts[p, 0].reshape(height, width, 3), pp[v].tolist()))
    focal_t = torch.tensor(focal, dtype=torch.float64)

    # ---- 2. spanning tree: world points of every view.
    world: list[torch.Tensor | None] = [None] * n_views
    tree = _spanning_tree(n_views, scores) if n_views > 1 else [(0, 0)]
    root = tree[0][0]
    world[root] = own[root]
    for a, b in tree[1:]:
        forward_row = best_row.get((a, b))
        backward_row = best_row.get((b, a))
        use_forward = backward_row is None or (forward_row is not None and scores[(a, b)] >= scores[(b, a)])
        if use_forward:
            row = forward_row
            known_pts, known_w, new_pts = pts[row, 0], weights[row, 0], pts[row, 1]
        else:
            row = backward_row
            known_pts, known_w, new_pts = pts[row, 1], weights[row, 1], pts[row, 0]
        s, rot, t = umeyama(known_pts, world[a], known_w)  # type: ignore[arg-type]
        world[b] = s * new_pts @ rot.T + t

    # ---- 3. poses: own camera-frame points -> world points (similarity; its scale is the depth scale).
    c2w0 = torch.zeros(n_views, 4, 4, dtype=torch.float64)
    depth0 = torch.zeros(n_views, n_pix, dtype=torch.float64)
    for v in range(n_views):
        if v == root:
            s, rot, t = 1.0, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        else:
            s, rot, t = umeyama(own[v], world[v], own_w[v])  # type: ignore[arg-type]
        c2w0[v, :3, :3], c2w0[v, :3, 3], c2w0[v, 3, 3] = rot, t, 1.0
        depth0[v] = ((world[v] - t) @ rot)[:, 2]  # type: ignore[operator]
    positive = depth0[depth0 > 0]
    floor = 1e-3 * (float(positive.median()) if positive.numel() else 1.0)
    depth0 = depth0.clamp_min(floor)

    # ---- 4. pair similarities onto the initial world points; fix the scale gauge.
    rays0 = _unit_rays(height, width, pp)
    cams0 = torch.cat(
        [rays0 / focal_t[:, None, None], torch.ones(n_views, n_pix, 1, dtype=torch.float64)], -1
    )
    world0 = c2w0[:, None, :3, 3] + (depth0[..., None] * cams0) @ c2w0[:, :3, :3].transpose(1, 2)
    wsum = weights.sum((1, 2)).clamp_min(1e-12)
    pivots = (weights[..., None] * pts).sum((1, 2)) / wsum[:, None]
    centred = pts - pivots[:, None, None, :]
    pair_q0, pair_t0, pair_ls0 = [], [], []
    for p, (i, j) in enumerate(pair_list):
        s, rot, t = umeyama(
            centred[p].reshape(-1, 3), torch.cat([world0[i], world0[j]]), weights[p].reshape(-1) + 1e-6
        )
        pair_q0.append(_matrix_to_quat(rot))
        pair_t0.append(t)
        pair_ls0.append(math.log(s))
    pair_ls0_t = torch.tensor(pair_ls0, dtype=torch.float64)
    gauge = math.exp(float(pair_ls0_t.mean()))
    depth0, pair_t0_t = depth0 / gauge, torch.stack(pair_t0) / gauge
    c2w0[:, :3, 3] /= gauge
    pair_ls0_t = pair_ls0_t - pair_ls0_t.mean()
    init_c2w, init_focal = c2w0.clone(), focal_t.clone()

    # ---- Adam on everything (float32 on the target device).
    dev = torch.device(device)
    f32 = {"dtype": torch.float32, "device": dev}
    log_depth = depth0.log().to(**f32).requires_grad_(True)
    cam_q = (
        torch.stack([_matrix_to_quat(c2w0[v, :3, :3]) for v in range(n_views)]).to(**f32).requires_grad_(True)
    )
    cam_t = c2w0[:, :3, 3].to(**f32).requires_grad_(True)
    log_f = focal_t.log().to(**f32).requires_grad_(True)
    pair_q = torch.stack(pair_q0).to(**f32).requires_grad_(True)
    pair_t = pair_t0_t.to(**f32).requires_grad_(True)
    pair_ls = pair_ls0_t.to(**f32).requires_grad_(True)
    rays_d, centred_d, weights_d = rays0.to(**f32), centred.to(**f32), weights.to(**f32)
    area = float(n_pairs * n_pix)
    lo, hi = focal_range(height, width)
    single = n_views == 1

    def world_points() -> torch.Tensor:
        f = log_f.exp()
        cams = torch.cat([rays_d / f[:, None, None], torch.ones_like(rays_d[..., :1])], -1)
        cams = log_depth.exp()[..., None] * cams
        return cam_t[:, None, :] + cams @ _quat_to_matrix(cam_q).transpose(1, 2)

    def loss_fn() -> torch.Tensor:
        world_now = world_points()
        rotation = _quat_to_matrix(pair_q)
        scale = (pair_ls - pair_ls.mean()).exp()
        moved = scale[:, None, None, None] * (centred_d @ rotation[:, None].transpose(-1, -2))
        moved = moved + pair_t[:, None, None, :]
        target = torch.stack([torch.stack([world_now[i], world_now[j]]) for i, j in pair_list])
        dist = (weights_d * (moved - target).norm(dim=-1)).sum((0, 2)) / area
        return dist[0] + dist[1]

    params = [log_depth, cam_q, cam_t, log_f, pair_q, pair_t, pair_ls]
    if single:  # the camera is the world; a pair of an image with itself fixes only focal and depth
        cam_q.requires_grad_(False)
        cam_t.requires_grad_(False)
        params = [log_depth, log_f, pair_q, pair_t]
    with torch.enable_grad():  # callers may run under no_grad (inference code)
        minimise_cosine_adam(
            params,
            loss_fn,
            iterations,
            lr,
            what="align_free_cameras",
            after_step=lambda: log_f.clamp_(math.log(lo), math.log(hi)),
        )

    with torch.no_grad():
        final = float(loss_fn())
        points = world_points().double().cpu()
        c2w = torch.eye(4, dtype=torch.float64).repeat(n_views, 1, 1)
        c2w[:, :3, :3] = _quat_to_matrix(cam_q.detach().double().cpu())
        c2w[:, :3, 3] = cam_t.detach().double().cpu()
    if not math.isfinite(final):
        raise AlignmentDivergedError(f"align_free_cameras: loss became {final} at iteration {iterations}")
    return FreeAlignmentResult(
        c2w=c2w.numpy(),
        focal=log_f.detach().double().exp().cpu().numpy(),
        principal=pp.numpy(),
        depth=log_depth.detach().double().exp().cpu().reshape(n_views, height, width).numpy(),
        points=points.reshape(n_views, height, width, 3).numpy().astype(np.float32),
        confidence=im_conf.reshape(n_views, height, width).numpy().astype(np.float32),
        loss=final,
        iterations=iterations,
        init_c2w=init_c2w.numpy(),
        init_focal=init_focal.numpy(),
    )

"""Which cameras may serve as inputs, their DUSt3R partner views, and the paper's k-farthest view sampler.

All functions work on camera *indices* into a ``(C, 3)`` array of camera centres in the head-centric frame
(head-local coordinates, metres); the stage maps indices to the dataset's camera id strings.

Pose choice. Head-centric camera centres move with the head at every timestep (``w2c_head = w2c @
head_to_world``), so "where is camera c relative to the face" has one answer per timestep. Two questions are
asked of it, and they get different answers on purpose:

* *Is this image a realistic input?* is a property of one image, so the stage stores it per (timestep,
  camera): :func:`front_facing_per_timestep`.
* *Which cameras are well spread / reasonable partners?* must be one fixed answer per subject: the paper
  stores exactly one DUSt3R position map per input view, computed with 3 *fixed* partner views, and each of
  the 4 input images of a training sample may come from a different timestep, so no single timestep's pose
  is the right one. Partner selection and k-farthest sampling therefore use one reference pose,
  :func:`reference_centers` (the mean head-centric camera direction over the input timesteps, at the mean
  distance). The head turns by a few tens of degrees at most, less than the spacing that matters for
  "well spread", so the reference pose is a faithful summary.

The sampler's camera pool is :func:`sampler_pool`: cameras front-facing in the reference pose that are also
front-facing at one or more timesteps; when a pooled camera is drawn, its timestep is drawn among the
timesteps where it is front-facing (the stored per-timestep mask). For a threshold of 90 degrees or more the
second condition is implied by the first (the set of back-facing directions is then a convex cone, so if
every timestep's direction lies in it, so does their mean); it is checked anyway so that a drawn camera
always has a timestep to draw.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from avat3r_core.geometry.sampling import farthest_point_sampling

_EPS = 1e-12


def _unit(vector: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    vec = np.asarray(vector, dtype=np.float64).reshape(-1)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise ValueError(f"{name} must be a finite 3-vector, got {vector!r}")
    norm = float(np.linalg.norm(vec))
    if norm < _EPS:
        raise ValueError(f"{name} must be non-zero")
    return vec / norm


def _centers(centers: np.ndarray, where: str, ndim: int = 2) -> np.ndarray:
    pts = np.asarray(centers, dtype=np.float64)
    if pts.ndim != ndim or pts.shape[-1] != 3:
        shape = "(C, 3)" if ndim == 2 else "(T, C, 3)"
        raise ValueError(f"{where}: centers must have shape {shape}, got {pts.shape}")
    if pts.shape[-2] == 0:
        raise ValueError(f"{where}: no cameras")
    if not np.all(np.isfinite(pts)):
        raise ValueError(f"{where}: centers contain non-finite values")
    return pts


# ----------------------------------------------------------------------------- front-facing test


def camera_angles(
    camera_centers_head: np.ndarray,
    head_center: np.ndarray,
    forward_axis: Sequence[float] | np.ndarray = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Angle in degrees between (camera centre - head centre) and the face's forward axis, shape ``(..., C)``.

    ``camera_centers_head`` is ``(..., C, 3)`` in the head-centric frame; ``head_center`` is ``(3,)`` or
    broadcastable to ``(..., 1, 3)`` (e.g. ``(T, 1, 3)`` for a per-timestep centre). 0 means the camera looks
    straight at the face, 180 straight at the back of the head. The angle is stored next to the boolean
    validity so that a threshold can be audited (or changed) without recomputing poses.
    """
    centers = np.asarray(camera_centers_head, dtype=np.float64)
    if centers.ndim < 2 or centers.shape[-1] != 3:
        raise ValueError(f"camera_angles: camera centres must have shape (..., C, 3), got {centers.shape}")
    head = np.asarray(head_center, dtype=np.float64)
    if head.shape[-1] != 3:
        raise ValueError(f"camera_angles: head_center must end in a 3-vector, got {head.shape}")
    axis = _unit(forward_axis, "forward_axis")
    offset = centers - head
    dist = np.linalg.norm(offset, axis=-1)
    if np.any(dist < 1e-9):
        raise ValueError("camera_angles: a camera centre coincides with the head centre")
    cosine = np.clip((offset @ axis) / dist, -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def front_facing(
    camera_centers_head: np.ndarray,
    head_center: np.ndarray,
    forward_axis: Sequence[float] | np.ndarray = (0.0, 0.0, 1.0),
    *,
    max_angle_deg: float,
) -> np.ndarray:
    """Bool ``(C,)``: may each camera serve as an input view in this head pose?

    A camera qualifies when the angle between (camera centre - head centre) and the head's forward axis is
    ``<= max_angle_deg`` (both in the head-centric frame). The paper excludes "cameras that only observe the
    person from the back since those are not realistic inputs during test-time"; a profile view (90 degrees)
    is realistic, so thresholds a little above 90 (e.g. 100-120) match that reading. ``max_angle_deg`` has
    no default because it is a config decision.
    """
    centers = _centers(camera_centers_head, "front_facing")
    return _threshold(camera_angles(centers, _head(head_center, "front_facing"), forward_axis), max_angle_deg)


def front_facing_per_timestep(
    centers_per_timestep: np.ndarray,
    head_center: np.ndarray,
    forward_axis: Sequence[float] | np.ndarray = (0.0, 0.0, 1.0),
    *,
    max_angle_deg: float,
) -> np.ndarray:
    """Bool ``(T, C)``: :func:`front_facing` at every timestep's head-centric pose.

    ``head_center`` is ``(3,)`` (one centre for the subject) or ``(T, 3)`` (one per timestep, e.g. from each
    timestep's tracked mesh). This is the validity the stage stores per (timestep, camera) and that decides
    which timesteps a drawn camera may take its image from.
    """
    centers = _centers(centers_per_timestep, "front_facing_per_timestep", ndim=3)
    head = np.asarray(head_center, dtype=np.float64)
    if head.shape == (3,):
        head = head[None, None, :]
    elif head.shape == (centers.shape[0], 3):
        head = head[:, None, :]
    else:
        raise ValueError(
            f"front_facing_per_timestep: head_center must have shape (3,) or ({centers.shape[0]}, 3), "
            f"got {head.shape}"
        )
    return _threshold(camera_angles(centers, head, forward_axis), max_angle_deg)


def _head(head_center: np.ndarray, where: str) -> np.ndarray:
    head = np.asarray(head_center, dtype=np.float64)
    if head.shape != (3,) or not np.all(np.isfinite(head)):
        raise ValueError(f"{where}: head_center must be a finite 3-vector, got shape {head.shape}")
    return head


def _threshold(angles: np.ndarray, max_angle_deg: float) -> np.ndarray:
    limit = float(max_angle_deg)
    if not 0.0 <= limit <= 180.0:
        raise ValueError(f"max_angle_deg must be in [0, 180], got {max_angle_deg}")
    return angles <= limit


def reference_centers(centers_per_timestep: np.ndarray, head_center: np.ndarray | None = None) -> np.ndarray:
    """One head-centric position per camera, ``(C, 3)``, summarising its positions over ``T`` timesteps.

    Per camera: the direction is the mean of the unit directions from the head centre at each timestep, and
    the distance is the mean distance. Averaging directions rather than positions and then re-projecting to
    the mean radius matters because a plain mean of points on an arc lies *inside* the arc (a chord): cameras
    whose position varied more would be pulled towards the head more, distorting the distances that farthest
    point sampling compares. The result is a pose every camera plausibly had; it is used for partner
    selection and k-farthest sampling (see the module docstring for why one fixed pose is needed there).

    ``head_center`` defaults to the head-frame origin; pass the subject's head centre (e.g.
    :func:`avat3r_core.geometry.crops.head_center`) to average directions about it. ``T == 1`` returns the
    input unchanged (up to rounding).
    """
    centers = _centers(centers_per_timestep, "reference_centers", ndim=3)
    if centers.shape[0] == 0:
        raise ValueError("reference_centers: no timesteps")
    head = np.zeros(3) if head_center is None else _head(head_center, "reference_centers")
    offset = centers - head
    dist = np.linalg.norm(offset, axis=-1)  # (T, C)
    if np.any(dist < 1e-9):
        raise ValueError("reference_centers: a camera centre coincides with the head centre")
    mean_dir = (offset / dist[..., None]).mean(axis=0)  # (C, 3)
    norm = np.linalg.norm(mean_dir, axis=-1)
    if np.any(norm < 1e-6):
        raise ValueError("reference_centers: a camera's directions cancel out (head turned by ~180 degrees?)")
    return head + mean_dir / norm[:, None] * dist.mean(axis=0)[:, None]


def sampler_pool(reference_valid: np.ndarray, valid_per_timestep: np.ndarray) -> np.ndarray:
    """Camera indices the view sampler and partner selection may use, ``(N,)`` int64 ascending.

    A camera must be front-facing in the reference pose (``reference_valid``, ``(C,)``) *and* at one or more
    timesteps (``valid_per_timestep``, ``(T, C)``), so that a drawn camera always has a timestep to draw.
    """
    ref = np.asarray(reference_valid, dtype=bool)
    per_t = np.asarray(valid_per_timestep, dtype=bool)
    if ref.ndim != 1 or per_t.ndim != 2 or per_t.shape[1] != ref.shape[0]:
        raise ValueError(
            f"sampler_pool: expected reference_valid (C,) and valid_per_timestep (T, C), got {ref.shape} "
            f"and {per_t.shape}"
        )
    return np.flatnonzero(ref & per_t.any(axis=0)).astype(np.int64)


# ----------------------------------------------------------------------------- farthest point sampling


def _valid_ids(valid_ids: np.ndarray | Sequence[int], n_cameras: int, where: str) -> np.ndarray:
    ids = np.asarray(valid_ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"{where}: valid_ids must be a 1-D array of integers, got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n_cameras):
        raise ValueError(f"{where}: valid_ids must lie in [0, {n_cameras}), got {ids.tolist()}")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{where}: valid_ids contains duplicates: {ids.tolist()}")
    return ids


def farthest_candidates(
    centers: np.ndarray, ids: np.ndarray | Sequence[int], start: int, k: int
) -> np.ndarray:
    """Farthest point sampling restricted to the cameras ``ids``: ``k`` camera indices, ``start`` first.

    ``k`` is capped at ``len(ids)`` (a small rig gives fewer candidates rather than an error). Ties go to the
    lowest position in ``ids`` (as in :func:`farthest_point_sampling`), so pass ``ids`` sorted for results
    that do not depend on the caller's ordering.
    """
    pts = _centers(centers, "farthest_candidates")
    ids = _valid_ids(ids, pts.shape[0], "farthest_candidates")
    where = np.flatnonzero(ids == start)
    if where.size != 1:
        raise ValueError(f"farthest_candidates: start camera {start} is not among the ids")
    k = min(operator.index(k), ids.size)
    return ids[farthest_point_sampling(pts[ids], k, int(where[0]))]


@dataclass(frozen=True)
class PartnerSet:
    """The DUSt3R partner views of one input camera (indices into the centres array).

    ``candidates``: farthest-point order over the valid cameras from ``camera`` (``camera`` first).
    ``partners``: the views DUSt3R runs with, drawn at random from ``candidates[1:]``.
    ``fallbacks``: the remaining candidates in farthest-point order, for :func:`replace_missing` when a
    partner's image is missing at some timestep.
    """

    camera: int
    candidates: tuple[int, ...]
    partners: tuple[int, ...]
    fallbacks: tuple[int, ...]


def partner_views(
    centers: np.ndarray,
    valid: np.ndarray,
    camera: int,
    *,
    n_candidates: int = 10,
    n_partners: int = 3,
    seed: int,
) -> PartnerSet:
    """The paper's "3 reasonable partner views" of ``camera``: k-farthest sampling started at the camera.

    Farthest point sampling over the valid cameras, started at ``camera``, gives ``n_candidates`` well-spread
    candidates (fewer if the rig has fewer valid cameras); ``n_partners`` of the others are drawn at random
    with ``np.random.default_rng(seed)``. This mirrors the training-time sampler (:func:`k_farthest_sample`)
    with the start fixed at the input camera, so DUSt3R sees view configurations like those training will
    draw. ``centers`` should be :func:`reference_centers` and ``valid`` true on the :func:`sampler_pool`: the
    partners are fixed over timesteps, as the paper stores one position map per input view.

    The camera itself and invalid (back) cameras are never returned. ValueError if ``camera`` is not valid
    or fewer than ``n_partners`` other valid cameras exist.
    """
    pts = _centers(centers, "partner_views")
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != (pts.shape[0],):
        raise ValueError(f"partner_views: valid must have shape ({pts.shape[0]},), got {mask.shape}")
    camera = operator.index(camera)
    if n_partners < 1 or n_candidates < n_partners + 1:
        raise ValueError(
            f"partner_views: need n_partners >= 1 and n_candidates > n_partners, got {n_partners}, "
            f"{n_candidates}"
        )
    if not 0 <= camera < pts.shape[0] or not mask[camera]:
        raise ValueError(f"partner_views: camera {camera} is not a valid (front-facing) input camera")
    ids = np.flatnonzero(mask)
    if ids.size - 1 < n_partners:
        raise ValueError(
            f"partner_views: camera {camera} has only {ids.size - 1} valid other cameras, "
            f"needs {n_partners} partners"
        )
    candidates = [int(i) for i in farthest_candidates(pts, ids, camera, n_candidates)]
    others = candidates[1:]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(others), size=n_partners, replace=False)
    partners = tuple(others[int(i)] for i in picked)
    fallbacks = tuple(c for c in others if c not in partners)
    return PartnerSet(camera=camera, candidates=tuple(candidates), partners=partners, fallbacks=fallbacks)


def replace_missing(
    partners: Sequence[int], fallbacks: Sequence[int], available: Callable[[int], bool]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Replace partners whose image is missing (``available(p)`` false) by the next available fallback.

    Returns ``(partners, replacements)``: the partner list in the original order with each missing one
    replaced in place, and the ``(missing, replacement)`` pairs for the log. Fallbacks are used in order and
    at most once; one that is itself a partner or unavailable is skipped. ValueError when the fallbacks run
    out (the message names the missing partners).
    """
    queue = iter(fallbacks)
    taken = set(partners)
    out: list[int] = []
    replaced: list[tuple[int, int]] = []
    for partner in partners:
        if available(partner):
            out.append(partner)
            continue
        for candidate in queue:
            if candidate not in taken and available(candidate):
                taken.add(candidate)
                out.append(candidate)
                replaced.append((partner, candidate))
                break
        else:
            missing = [p for p in partners if not available(p)]
            raise ValueError(
                f"replace_missing: partners {missing} are missing and the fallbacks {list(fallbacks)} "
                "cannot replace them all"
            )
    return out, replaced


def k_farthest_sample(
    centers: np.ndarray,
    valid_ids: np.ndarray | Sequence[int],
    *,
    n_candidates: int = 10,
    n_views: int = 4,
    rng: np.random.Generator,
) -> np.ndarray:
    """The paper's training-time k-farthest viewpoint sampler: ``n_views`` camera indices ``(n_views,)``.

    A random start among ``valid_ids``, farthest point sampling to ``n_candidates`` well-spread candidates
    (all valid cameras if there are fewer), then ``n_views`` of them drawn at random without replacement:
    random enough for training, spread enough not to see the person from one side only. ``centers`` should
    be :func:`reference_centers` and ``valid_ids`` :func:`sampler_pool`. The returned order is the random
    draw order. ValueError if fewer than ``n_views`` valid cameras exist.
    """
    pts = _centers(centers, "k_farthest_sample")
    ids = np.sort(_valid_ids(valid_ids, pts.shape[0], "k_farthest_sample"))
    if n_views < 1 or n_candidates < n_views:
        raise ValueError(
            f"k_farthest_sample: need 1 <= n_views <= n_candidates, got {n_views}, {n_candidates}"
        )
    if ids.size < n_views:
        raise ValueError(f"k_farthest_sample: only {ids.size} valid cameras, needs {n_views} views")
    start = int(ids[rng.integers(ids.size)])
    candidates = farthest_candidates(pts, ids, start, n_candidates)
    return rng.choice(candidates, size=n_views, replace=False).astype(np.int64)

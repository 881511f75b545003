"""Farthest point sampling, used to pick well-spread subsets (e.g. input views, timesteps).

Deterministic by construction: the start index is explicit and ties go to the lowest index, so a
stage that samples with it reproduces bit for bit. Distances are compared squared (same order as
Euclidean, no sqrt rounding).
"""

from __future__ import annotations

import operator

import numpy as np


def _check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2:
        raise ValueError(f"farthest_point_sampling: points must have shape (N, D), got {pts.shape}")
    if pts.shape[0] == 0:
        raise ValueError("farthest_point_sampling: points is empty")
    if not np.all(np.isfinite(pts)):
        raise ValueError("farthest_point_sampling: points contain non-finite values")
    return pts


def farthest_point_sampling(points: np.ndarray, k: int, start_index: int) -> np.ndarray:
    """Indices (k,) int64 of ``k`` points chosen greedily: ``start_index`` first, then each time the
    point maximising the minimum distance to those already chosen (ties: lowest index).

    Already-chosen points are never picked again, so duplicated points are returned as distinct
    indices. O(N * k) time, O(N) extra memory. Raises ValueError when ``k > N``, ``k < 0`` or the
    start index is out of range.
    """
    pts = _check_points(points)
    n = pts.shape[0]
    try:
        k = operator.index(k)
        start_index = operator.index(start_index)
    except TypeError as exc:
        raise ValueError(f"farthest_point_sampling: k and start_index must be integers ({exc})") from exc
    if k < 0 or k > n:
        raise ValueError(f"farthest_point_sampling: k must be in [0, {n}], got {k}")
    if not 0 <= start_index < n:
        raise ValueError(f"farthest_point_sampling: start_index must be in [0, {n}), got {start_index}")
    out = np.empty(k, dtype=np.int64)
    if k == 0:
        return out
    min_d2 = np.full(n, np.inf)
    chosen = np.zeros(n, dtype=bool)
    current = start_index
    for step in range(k):
        out[step] = current
        chosen[current] = True
        diff = pts - pts[current]
        np.minimum(min_d2, np.einsum("nd,nd->n", diff, diff), out=min_d2)
        if step + 1 < k:
            candidate = np.where(chosen, -1.0, min_d2)
            current = int(np.argmax(candidate))  # argmax returns the first maximum: lowest index
    return out


def farthest_point_order(points: np.ndarray, start_index: int) -> np.ndarray:
    """All N indices in farthest-point order starting at ``start_index``."""
    pts = _check_points(points)
    return farthest_point_sampling(pts, pts.shape[0], start_index)

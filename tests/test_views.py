"""View selection: front-facing test (on the moving synthetic head), partner views, k-farthest sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.geometry import Camera
from avat3r_core.geometry.crops import head_center
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.geometry.views import (
    PartnerSet,
    camera_angles,
    farthest_candidates,
    front_facing,
    front_facing_per_timestep,
    k_farthest_sample,
    partner_views,
    reference_centers,
    replace_missing,
    sampler_pool,
)

MAX_ANGLE = 110.0


def _sphere(n: int, radius: float = 1.2) -> np.ndarray:
    """Fibonacci-sphere points around the origin (a dome of cameras all around the head)."""
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - y * y)
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return radius * np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)


def _brute_force_fps(points: np.ndarray, ids: list[int], start: int, k: int) -> list[int]:
    chosen = [start]
    while len(chosen) < k:
        best, best_d = None, -1.0
        for i in ids:
            if i in chosen:
                continue
            d = min(float(np.linalg.norm(points[i] - points[j])) for j in chosen)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


# ----------------------------------------------------------------------------- farthest point sampling


def test_farthest_candidates_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        points = rng.normal(size=(30, 3))
        ids = sorted(rng.choice(30, size=18, replace=False).tolist())
        start = ids[int(rng.integers(len(ids)))]
        got = farthest_candidates(points, ids, start, 10).tolist()
        assert got == _brute_force_fps(points, ids, start, 10)
    assert farthest_candidates(points, ids, ids[0], 99).size == len(ids)  # capped at the pool


def test_partner_candidates_equal_brute_force_over_valid_cameras() -> None:
    centers = _sphere(40)
    valid = front_facing(centers, np.zeros(3), max_angle_deg=MAX_ANGLE)
    ids = np.flatnonzero(valid).tolist()
    for camera in ids[:8]:
        ps = partner_views(centers, valid, camera, seed=3)
        assert list(ps.candidates) == _brute_force_fps(centers, ids, camera, 10)


# ----------------------------------------------------------------------------- partner views


def test_partners_exclude_self_and_back_cameras() -> None:
    centers = _sphere(48)
    valid = front_facing(centers, np.zeros(3), max_angle_deg=MAX_ANGLE)
    assert 0 < valid.sum() < valid.size
    for camera, seed in itertools.product(np.flatnonzero(valid), range(3)):
        ps = partner_views(centers, valid, int(camera), seed=seed)
        assert isinstance(ps, PartnerSet) and ps.camera == camera and ps.candidates[0] == camera
        assert len(ps.partners) == 3 and len(set(ps.partners)) == 3
        assert camera not in ps.partners and camera not in ps.fallbacks
        assert all(valid[p] for p in ps.partners + ps.fallbacks)
        assert set(ps.partners) <= set(ps.candidates[1:])
        assert ps.fallbacks == tuple(c for c in ps.candidates[1:] if c not in ps.partners)
        assert len(ps.candidates) == 10


def test_partners_reproducible_by_seed() -> None:
    centers = _sphere(48)
    valid = front_facing(centers, np.zeros(3), max_angle_deg=MAX_ANGLE)
    camera = int(np.flatnonzero(valid)[0])
    first = partner_views(centers, valid, camera, seed=11)
    assert partner_views(centers, valid, camera, seed=11) == first
    others = {partner_views(centers, valid, camera, seed=s).partners for s in range(20)}
    assert len(others) > 1
    # the candidate set does not depend on the seed, only the draw does
    assert {partner_views(centers, valid, camera, seed=s).candidates for s in range(20)} == {first.candidates}


def test_partners_errors_name_the_camera() -> None:
    centers = _sphere(12)
    valid = np.zeros(12, dtype=bool)
    valid[[2, 5, 7]] = True
    with pytest.raises(ValueError, match="camera 5"):
        partner_views(centers, valid, 5, seed=0)  # only 2 valid others
    valid[9] = True
    ps = partner_views(centers, valid, 5, seed=0)  # fewer valid than n_candidates: all of them
    assert sorted(ps.candidates) == [2, 5, 7, 9] and ps.fallbacks == ()
    with pytest.raises(ValueError, match="camera 3"):
        partner_views(centers, valid, 3, seed=0)  # a back camera is not an input camera


# ----------------------------------------------------------------------------- replace_missing


def test_replace_missing() -> None:
    missing = {4, 8}
    available = lambda c: c not in missing  # noqa: E731
    assert replace_missing([1, 2, 3], [5, 6], available) == ([1, 2, 3], [])
    out, pairs = replace_missing([1, 4, 3], [8, 3, 6, 7], available)  # 8 missing, 3 already a partner
    assert out == [1, 6, 3] and pairs == [(4, 6)]
    out, pairs = replace_missing([4, 2, 8], [5, 6], available)
    assert out == [5, 2, 6] and pairs == [(4, 5), (8, 6)]
    with pytest.raises(ValueError, match=r"\[4, 8\]"):
        replace_missing([4, 2, 8], [5, 8], available)


# ----------------------------------------------------------------------------- k-farthest sampling


def _mean_pairwise(points: np.ndarray) -> float:
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    n = len(points)
    return float(d.sum() / (n * (n - 1)))


def test_k_farthest_spreads_views_more_than_uniform() -> None:
    centers = _sphere(80)
    valid_ids = np.flatnonzero(front_facing(centers, np.zeros(3), max_angle_deg=MAX_ANGLE))
    rng = np.random.default_rng(5)
    kf, uni = [], []
    for _ in range(300):
        views = k_farthest_sample(centers, valid_ids, rng=rng)
        assert views.shape == (4,) and len(set(views.tolist())) == 4
        assert set(views.tolist()) <= set(valid_ids.tolist())
        kf.append(_mean_pairwise(centers[views]))
        uni.append(_mean_pairwise(centers[rng.choice(valid_ids, 4, replace=False)]))
    assert np.mean(kf) > 1.1 * np.mean(uni)


def test_k_farthest_reproducible_and_small_pools() -> None:
    centers = _sphere(20)
    ids = np.arange(0, 20, 2)
    a = k_farthest_sample(centers, ids, rng=np.random.default_rng(1))
    b = k_farthest_sample(centers, ids, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    five = k_farthest_sample(centers, [3, 4, 9, 12, 17], rng=np.random.default_rng(0))
    assert set(five.tolist()) <= {3, 4, 9, 12, 17}
    with pytest.raises(ValueError, match="only 3 valid"):
        k_farthest_sample(centers, [1, 2, 3], rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        k_farthest_sample(centers, [1, 1, 2, 3, 4], rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------- front-facing, reference pose


def test_front_facing_hand_values() -> None:
    centers = np.array([[0, 0, 2.0], [2.0, 0, 0], [0, 0, -2.0], [0.0, 2.0, 0.1]])
    np.testing.assert_allclose(camera_angles(centers, np.zeros(3)), [0.0, 90.0, 180.0, 87.1376], atol=1e-3)
    assert front_facing(centers, np.zeros(3), max_angle_deg=90.0).tolist() == [True, True, False, True]
    assert front_facing(centers, np.zeros(3), (1.0, 0, 0), max_angle_deg=45.0).tolist() == [
        False,
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError):
        front_facing(centers, np.zeros(3), max_angle_deg=200.0)


@pytest.fixture(scope="module")
def subject(synthetic_capture):  # type: ignore[no-untyped-def]
    cap = Ava256Capture(synthetic_capture.root, synthetic_capture.subjects[0])
    frames = [f.frame for f in cap.frames()]
    return cap, frames


def test_front_facing_on_synthetic_capture(subject) -> None:  # type: ignore[no-untyped-def]
    cap, frames = subject
    frame = frames[0]
    head_to_world = cap.head_pose(frame)
    center = head_center(cap.tracked_mesh(frame))
    template = cap.cameras()[cap.camera_ids[0]]
    world_head = (head_to_world @ np.append(center, 1.0))[:3]
    centers_head = []
    for local in ([0.0, 0.0, 1.0], [0.0, 0.0, -1.0]):  # in front of the face, behind the head
        eye = (head_to_world @ np.append(center + np.array(local), 1.0))[:3]
        world_cam = Camera(template.K, look_at_w2c(eye, world_head, np.array([0.0, 1.0, 0.0])), 83, 128)
        centers_head.append(world_cam.to_head_centric(head_to_world).center)
    valid = front_facing(np.array(centers_head), center, max_angle_deg=MAX_ANGLE)
    assert valid.tolist() == [True, False]
    np.testing.assert_allclose(camera_angles(np.array(centers_head), center), [0.0, 180.0], atol=1e-6)


def test_moving_head_changes_validity(subject) -> None:  # type: ignore[no-untyped-def]
    cap, frames = subject
    center = head_center(cap.tracked_mesh(frames[0]))
    centers = np.array([[cap.head_centric_camera(c, f).center for c in cap.camera_ids] for f in frames])
    angles = camera_angles(centers, center)  # (T, C)
    spread = angles.max(axis=0) - angles.min(axis=0)
    cam = int(np.argmax(spread))
    assert spread[cam] > 5.0  # the synthetic head turns: head-centric cameras move
    threshold = float(np.median(angles[:, cam]))
    per_t = front_facing_per_timestep(centers, center, max_angle_deg=threshold)
    assert per_t.shape == angles.shape
    assert per_t[:, cam].any() and not per_t[:, cam].all()
    # a per-timestep head centre is accepted too
    per_frame_centre = np.array([head_center(cap.tracked_mesh(f)) for f in frames])
    assert front_facing_per_timestep(centers, per_frame_centre, max_angle_deg=threshold).shape == angles.shape
    # the world (non head-centric) pose would have given one answer for all timesteps
    world = np.array([[cap.cameras()[c].center for c in cap.camera_ids] for _ in frames])
    assert (world == world[0]).all()


def test_reference_centers_and_pool(subject) -> None:  # type: ignore[no-untyped-def]
    cap, frames = subject
    center = head_center(cap.tracked_mesh(frames[0]))
    centers = np.array([[cap.head_centric_camera(c, f).center for c in cap.camera_ids] for f in frames])
    ref = reference_centers(centers, center)
    assert ref.shape == (len(cap.camera_ids), 3)
    radius = np.linalg.norm(centers - center, axis=-1).mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(ref - center, axis=-1), radius, rtol=1e-12)
    # the reference angle lies inside each camera's range of angles over time
    ref_angle = camera_angles(ref, center)
    angles = camera_angles(centers, center)
    assert np.all(ref_angle >= angles.min(axis=0) - 1e-9) and np.all(ref_angle <= angles.max(axis=0) + 1e-9)
    ref_valid = front_facing(ref, center, max_angle_deg=MAX_ANGLE)
    pool = sampler_pool(ref_valid, front_facing_per_timestep(centers, center, max_angle_deg=MAX_ANGLE))
    assert 0 < pool.size < len(cap.camera_ids) and np.all(ref_valid[pool])
    np.testing.assert_allclose(reference_centers(centers[:1]), centers[0], atol=1e-12)


def test_reference_centers_stays_on_the_arc() -> None:
    # one camera swinging +-30 degrees around the head on a unit circle: the mean position lies inside the
    # circle (radius ~0.91); the reference is back on the circle at the mean angle
    angles = np.radians([-30.0, 0.0, 30.0])
    centers = np.stack([np.sin(angles), np.zeros(3), np.cos(angles)], axis=1)[:, None, :]
    ref = reference_centers(centers)
    np.testing.assert_allclose(ref, [[0.0, 0.0, 1.0]], atol=1e-12)
    assert np.linalg.norm(centers.mean(axis=0)) < 0.95

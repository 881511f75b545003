"""Geometry tests against hand-computed values: cameras, crop/resize bookkeeping, rays, FPS, transforms."""

from __future__ import annotations

import numpy as np
import pytest

from avat3r_core.geometry import (
    Camera,
    farthest_point_order,
    farthest_point_sampling,
    invert_rigid,
    look_at_w2c,
    pixel_centers,
    plucker_rays,
    ray_directions,
    rigid,
    rotation_from_axis_angle,
)

K_HAND = np.array([[100.0, 0.0, 64.0], [0.0, 200.0, 48.0], [0.0, 0.0, 1.0]])


def _hand_camera(rotation: np.ndarray | None = None) -> Camera:
    rotation = np.eye(3) if rotation is None else rotation
    return Camera(K=K_HAND, w2c=rigid(rotation, [0.0, 0.0, 2.0]), width=128, height=96)


def _random_camera(rng: np.random.Generator, width: int = 40, height: int = 30) -> Camera:
    rotation = rotation_from_axis_angle(rng.normal(size=3))
    K = np.array([[55.0, 0.3, 21.5], [0.0, 48.0, 14.0], [0.0, 0.0, 1.0]])
    return Camera(K=K, w2c=rigid(rotation, rng.normal(size=3)), width=width, height=height)


# ----------------------------------------------------------------------------- transforms


def test_rotation_from_axis_angle_hand_value() -> None:
    rot = rotation_from_axis_angle(np.array([0.0, np.pi / 2, 0.0]))
    expected = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_allclose(rot, expected, atol=1e-12)
    np.testing.assert_array_equal(rotation_from_axis_angle(np.zeros(3)), np.eye(3))


def test_invert_rigid_round_trip() -> None:
    transform = rigid(rotation_from_axis_angle(np.array([0.3, -0.2, 0.9])), [1.0, -2.0, 0.5])
    np.testing.assert_allclose(invert_rigid(transform) @ transform, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(transform), np.linalg.inv(transform), atol=1e-12)


def test_look_at_rejects_parallel_up() -> None:
    with pytest.raises(ValueError):
        look_at_w2c(np.zeros(3), np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0]))


# ----------------------------------------------------------------------------- Camera basics


def test_project_hand_values() -> None:
    cam = _hand_camera()
    # camera point (0.1, -0.05, 5) -> u = 100 * 0.1 / 5 + 64 = 66, v = 200 * -0.05 / 5 + 48 = 46
    uv, depth = cam.project(np.array([[0.1, -0.05, 3.0]]))
    np.testing.assert_allclose(uv, [[66.0, 46.0]], atol=1e-12)
    np.testing.assert_allclose(depth, [5.0], atol=1e-12)

    # 90 deg about y: world (1, 0.2, 0.3) -> rotated (0.3, 0.2, -1) -> + t -> camera (0.3, 0.2, 1)
    # u = 100 * 0.3 + 64 = 94, v = 200 * 0.2 + 48 = 88
    rotated = _hand_camera(rotation_from_axis_angle(np.array([0.0, np.pi / 2, 0.0])))
    uv, depth = rotated.project(np.array([[1.0, 0.2, 0.3]]))
    np.testing.assert_allclose(uv, [[94.0, 88.0]], atol=1e-12)
    np.testing.assert_allclose(depth, [1.0], atol=1e-12)


def test_project_behind_camera_reports_negative_depth() -> None:
    uv, depth = _hand_camera().project(np.array([[0.1, -0.05, -3.0]]))  # camera z = -1
    assert depth[0] < 0
    np.testing.assert_allclose(uv, [[100.0 * -0.1 + 64.0, 200.0 * 0.05 + 48.0]], atol=1e-12)


def test_project_unproject_round_trip() -> None:
    rng = np.random.default_rng(0)
    cam = _random_camera(rng)
    points = cam.center + 3.0 * cam.forward + rng.normal(scale=0.5, size=(50, 3))
    uv, depth = cam.project(points)
    np.testing.assert_allclose(cam.unproject(uv, depth), points, atol=1e-9)
    uv_in = rng.uniform(0, 40, size=(20, 2))
    depth_in = rng.uniform(0.5, 4.0, size=20)
    uv_back, depth_back = cam.project(cam.unproject(uv_in, depth_in))
    np.testing.assert_allclose(uv_back, uv_in, atol=1e-9)
    np.testing.assert_allclose(depth_back, depth_in, atol=1e-12)


def test_extrinsic_properties() -> None:
    rng = np.random.default_rng(1)
    cam = _random_camera(rng)
    np.testing.assert_allclose(cam.c2w @ cam.w2c, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(cam.R, cam.w2c[:3, :3])
    np.testing.assert_allclose(cam.t, cam.w2c[:3, 3])
    np.testing.assert_allclose(cam.c2w[:3, 3], cam.center, atol=1e-12)
    # the camera centre maps to the camera-space origin
    np.testing.assert_allclose(cam.R @ cam.center + cam.t, np.zeros(3), atol=1e-12)


def test_look_at_center_and_forward() -> None:
    eye, target = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 0.0])
    cam = Camera(K=K_HAND, w2c=look_at_w2c(eye, target, np.array([0.0, 1.0, 0.0])), width=128, height=96)
    np.testing.assert_allclose(cam.center, eye, atol=1e-12)
    np.testing.assert_allclose(cam.forward, [0.0, 0.0, -1.0], atol=1e-12)
    above, right = target + np.array([0.0, 0.5, 0.0]), target + np.array([0.5, 0.0, 0.0])
    uv, depth = cam.project(np.stack([target, above, right]))
    np.testing.assert_allclose(uv[0], [64.0, 48.0], atol=1e-12)  # target lands on the principal point
    np.testing.assert_allclose(depth, [3.0, 3.0, 3.0], atol=1e-12)
    assert uv[1, 1] < 48.0  # world "up" appears above the centre (image v points down)
    # looking down -z with +y up (the OpenGL default view), world +x appears to the right
    np.testing.assert_allclose(uv[2], [64.0 + 100.0 * 0.5 / 3.0, 48.0], atol=1e-12)
    np.testing.assert_allclose(uv[1], [64.0, 48.0 - 200.0 * 0.5 / 3.0], atol=1e-12)


def test_camera_is_immutable_and_copies_inputs() -> None:
    K = K_HAND.copy()
    cam = Camera(K=K, w2c=np.eye(4), width=128, height=96)
    K[0, 0] = 1.0
    assert cam.K[0, 0] == 100.0
    assert cam.K.dtype == np.float64 and cam.w2c.dtype == np.float64
    with pytest.raises(ValueError):
        cam.K[0, 0] = 5.0  # read-only array
    with pytest.raises(AttributeError):
        cam.width = 3  # type: ignore[misc]
    assert isinstance(Camera(K=K_HAND, w2c=np.eye(4), width=np.int64(8), height=4).width, int)


@pytest.mark.parametrize(
    ("K", "w2c", "width", "height"),
    [
        (K_HAND, rigid(np.diag([1.0, 1.0, 1.1]), np.zeros(3)), 8, 8),  # not orthonormal
        (K_HAND, rigid(np.diag([1.0, 1.0, -1.0]), np.zeros(3)), 8, 8),  # reflection, det -1
        (K_HAND, np.where(np.eye(4) == 1, np.nan, 0.0), 8, 8),  # NaN
        (np.where(np.eye(3) == 1, np.inf, 0.0), np.eye(4), 8, 8),  # inf in K
        (K_HAND[:2], np.eye(4), 8, 8),  # wrong K shape
        (K_HAND, np.eye(4)[:3], 8, 8),  # wrong w2c shape
        (K_HAND, np.eye(4) + np.array([[0, 0, 0, 0]] * 3 + [[0, 0, 1, 0]]), 8, 8),  # bad last row
        (np.diag([-100.0, 100.0, 1.0]), np.eye(4), 8, 8),  # negative focal
        (np.diag([100.0, 100.0, 2.0]), np.eye(4), 8, 8),  # K last row not [0, 0, 1]
        (K_HAND, np.eye(4), 0, 8),  # empty image
        (K_HAND, np.eye(4), 8, -1),
        (K_HAND, np.eye(4), 8.5, 8),  # non-integer size
    ],
)
def test_invalid_camera_raises(K: np.ndarray, w2c: np.ndarray, width: int, height: int) -> None:
    with pytest.raises(ValueError):
        Camera(K=K, w2c=w2c, width=width, height=height)


def test_project_unproject_reject_wrong_shapes() -> None:
    cam = _hand_camera()
    with pytest.raises(ValueError):
        cam.project(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        cam.unproject(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(ValueError):
        cam.with_units(0.0)


# ----------------------------------------------------------------------------- crop / resize


def test_pixel_centers() -> None:
    centers = pixel_centers(4, 3)
    assert centers.shape == (3, 4, 2)
    np.testing.assert_array_equal(centers[2, 1], [1.5, 2.5])
    np.testing.assert_array_equal(centers[0, 0], [0.5, 0.5])


@pytest.mark.parametrize(
    ("x0", "y0", "crop_w", "crop_h", "out_w", "out_h"),
    [
        (10.0, 5.0, 64, 48, 128, 96),  # inside, upsampled x2
        (-12.0, -7.5, 100, 80, 37, 29),  # partly outside (padding), anisotropic downsample
        (90.25, 60.0, 64, 64, 512, 512),  # overlaps the right/bottom border, fractional offset
    ],
)
def test_crop_and_resize_moves_pixels_as_expected(
    x0: float, y0: float, crop_w: int, crop_h: int, out_w: int, out_h: int
) -> None:
    rng = np.random.default_rng(2)
    cam = _random_camera(rng, width=128, height=96)
    points = cam.center + 3.0 * cam.forward + rng.normal(scale=0.7, size=(30, 3))
    uv, depth = cam.project(points)
    new = cam.crop_and_resize(x0, y0, crop_w, crop_h, out_w, out_h)
    assert (new.width, new.height) == (out_w, out_h)
    uv_new, depth_new = new.project(points)
    expected = (uv - [x0, y0]) * [out_w / crop_w, out_h / crop_h]
    np.testing.assert_allclose(uv_new, expected, atol=1e-4)
    np.testing.assert_allclose(depth_new, depth, atol=1e-12)
    # crop then resize is exactly what the two-step path gives
    assert new.allclose(cam.crop(x0, y0, crop_w, crop_h).resize(out_w, out_h))


def test_crop_integer_offset_maps_pixel_centres() -> None:
    cam = _hand_camera()
    crop = cam.crop(-3, 7, 20, 10)
    assert (crop.width, crop.height) == (20, 10)
    np.testing.assert_allclose(crop.K[:2, 2], [67.0, 41.0])
    # crop pixel (i, j) is original pixel (i + 7, j - 3): their rays coincide
    np.testing.assert_allclose(ray_directions(crop)[2, 5], ray_directions(cam)[9, 2], atol=1e-12)


def test_resize_hand_values_and_border_alignment() -> None:
    cam = _hand_camera()
    half = cam.resize(64, 24)  # x / 2, y / 4
    np.testing.assert_allclose(half.K, [[50.0, 0.0, 32.0], [0.0, 50.0, 12.0], [0.0, 0.0, 1.0]])
    assert cam.scaled_to(64, 24).allclose(half)
    # the image corners map to each other (area semantics): a point at the original's (128, 96)
    # lands at (64, 24) of the resized image
    corner = cam.unproject(np.array([[128.0, 96.0]]), np.array([2.0]))
    np.testing.assert_allclose(half.project(corner)[0], [[64.0, 24.0]], atol=1e-12)
    # original pixel centre (0.5, 0.5) doubled -> (1, 1): the corner shared by output pixels 0 and 1
    double = cam.resize(256, 192)
    first = cam.unproject(np.array([[0.5, 0.5]]), np.array([2.0]))
    np.testing.assert_allclose(double.project(first)[0], [[1.0, 1.0]], atol=1e-12)


# ----------------------------------------------------------------------------- frame / units


def test_to_head_centric_consistency() -> None:
    rng = np.random.default_rng(3)
    cam = _random_camera(rng)
    head_to_world = rigid(rotation_from_axis_angle(np.array([0.2, -0.4, 0.1])), [0.05, -0.1, 0.3])
    head_cam = cam.to_head_centric(head_to_world)
    local = rng.normal(scale=0.2, size=(10, 3))
    world = local @ head_to_world[:3, :3].T + head_to_world[:3, 3]
    uv_head, depth_head = head_cam.project(local)
    uv_world, depth_world = cam.project(world)
    np.testing.assert_allclose(uv_head, uv_world, atol=1e-9)
    np.testing.assert_allclose(depth_head, depth_world, atol=1e-12)
    np.testing.assert_allclose(head_cam.w2c, cam.w2c @ head_to_world)
    # the head-frame camera centre is the world centre expressed in the head frame
    np.testing.assert_allclose(
        head_cam.center, (invert_rigid(head_to_world) @ np.append(cam.center, 1.0))[:3], atol=1e-12
    )
    with pytest.raises(ValueError):
        cam.to_head_centric(np.diag([2.0, 2.0, 2.0, 1.0]))  # scale is not rigid


def test_with_units_mm_to_m() -> None:
    rotation = rotation_from_axis_angle(np.array([0.1, 0.2, 0.3]))
    cam_mm = Camera(K=K_HAND, w2c=rigid(rotation, [100.0, -50.0, 1500.0]), width=128, height=96)
    cam_m = cam_mm.with_units(1e-3)
    np.testing.assert_allclose(cam_m.t, [0.1, -0.05, 1.5])
    np.testing.assert_allclose(cam_m.center, cam_mm.center * 1e-3, atol=1e-12)
    point_mm = np.array([[12.0, -30.0, 5.0]])
    np.testing.assert_allclose(cam_m.project(point_mm * 1e-3)[0], cam_mm.project(point_mm)[0], atol=1e-9)


# ----------------------------------------------------------------------------- rays


def test_plucker_rays() -> None:
    rng = np.random.default_rng(4)
    cam = _random_camera(rng, width=12, height=9)
    rays = plucker_rays(cam)
    assert rays.shape == (9, 12, 6) and rays.dtype == np.float64
    moment, d = rays[..., :3], rays[..., 3:]
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(moment, np.cross(cam.center, d), atol=1e-12)
    np.testing.assert_allclose(d, ray_directions(cam), atol=0)
    # a point along the ray through pixel (i, j) projects back to that pixel's centre, in front
    i, j = np.meshgrid(np.arange(9), np.arange(12), indexing="ij")
    points = cam.center + 2.5 * d.reshape(-1, 3)
    uv, depth = cam.project(points)
    np.testing.assert_allclose(uv, np.stack([j.ravel() + 0.5, i.ravel() + 0.5], axis=1), atol=1e-9)
    assert np.all(depth > 0)
    # the moment does not depend on the point chosen on the ray
    for s in (-3.0, 0.7, 10.0):
        np.testing.assert_allclose(np.cross(cam.center + s * d, d), moment, atol=1e-12)


def test_ray_directions_hand_value() -> None:
    K = np.array([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    cam = Camera(K=K, w2c=np.eye(4), width=4, height=4)
    dirs = ray_directions(cam)
    # pixel (row 1, col 3) centre (3.5, 1.5): camera direction ((3.5-2)/2, (1.5-2)/2, 1) = (0.75, -0.25, 1)
    expected = np.array([0.75, -0.25, 1.0])
    np.testing.assert_allclose(dirs[1, 3], expected / np.linalg.norm(expected), atol=1e-12)


# ----------------------------------------------------------------------------- farthest point sampling


def _fps_reference(points: np.ndarray, k: int, start: int) -> list[int]:
    chosen = [start]
    while len(chosen) < k:
        best, best_d = -1, -1.0
        for idx in range(len(points)):
            if idx in chosen:
                continue
            dmin = min(float(np.sum((points[idx] - points[c]) ** 2)) for c in chosen)
            if dmin > best_d:  # strict: ties keep the lowest index
                best, best_d = idx, dmin
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_fps_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = [2, 3, 3, 5, 1][seed]
    points = rng.normal(size=(40, dim))
    start = int(rng.integers(40))
    k = 15
    result = farthest_point_sampling(points, k, start)
    assert result.dtype.kind == "i" and result.shape == (k,)
    assert result.tolist() == _fps_reference(points, k, start)


def test_fps_hand_made() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [5.0, 0.0], [0.0, 4.0]])
    # from 0: farthest is 2 (d=10); then min dists: 1->1, 3->5, 4->4 => 3; then 1->1, 4->4 => 4; then 1
    assert farthest_point_sampling(points, 4, 0).tolist() == [0, 2, 3, 4]
    assert farthest_point_order(points, 0).tolist() == [0, 2, 3, 4, 1]
    assert farthest_point_sampling(points, 1, 3).tolist() == [3]
    assert farthest_point_sampling(points, 0, 3).tolist() == []


def test_fps_ties_and_duplicates() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # from 0: 3 is farthest; then 1 and 2 tie at distance 1 -> lowest index 1
    assert farthest_point_order(square, 0).tolist() == [0, 3, 1, 2]
    duplicated = np.array([[0.0], [0.0], [2.0], [2.0]])
    order = farthest_point_order(duplicated, 1)
    assert order.tolist() == [1, 2, 0, 3]  # every index exactly once even at zero distance
    rng = np.random.default_rng(9)
    assert sorted(farthest_point_order(rng.normal(size=(25, 3)), 7).tolist()) == list(range(25))


def test_fps_invalid_inputs() -> None:
    points = np.zeros((5, 3))
    with pytest.raises(ValueError):
        farthest_point_sampling(points, 6, 0)
    with pytest.raises(ValueError):
        farthest_point_sampling(points, 2, 5)
    with pytest.raises(ValueError):
        farthest_point_sampling(points, -1, 0)
    with pytest.raises(ValueError):
        farthest_point_sampling(np.zeros(5), 2, 0)
    with pytest.raises(ValueError):
        farthest_point_sampling(np.array([[0.0, np.nan]]), 1, 0)

"""Head-centric crops: window placement, the crop camera, and that crop pixels match the crop camera."""

from __future__ import annotations

import numpy as np
import pytest

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.geometry import Camera
from avat3r_core.geometry.crops import (
    INPUT_WINDOW_FRACTION,
    CropWindow,
    cut_crop,
    head_center,
    input_window,
    resample_matrix,
    supervision_window,
)
from avat3r_core.geometry.transforms import look_at_w2c


def _bilinear(image: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples at continuous uv (pixel (i, j) centre at (j + 0.5, i + 0.5)) and an inside-mask."""
    img = image.astype(np.float64)
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    inside = (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.minimum(np.floor(x).astype(int), w - 2), np.minimum(np.floor(y).astype(int), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy, inside


@pytest.fixture(scope="module")
def scene(synthetic_capture):  # type: ignore[no-untyped-def]
    sid = synthetic_capture.subjects[0]
    cap = Ava256Capture(synthetic_capture.root, sid)
    frame = cap.frames()[0].frame
    cam_id = next(c for c in cap.camera_ids if cap.has_image(c, frame))
    verts = cap.tracked_mesh(frame)
    camera = cap.head_centric_camera(cam_id, frame)
    image = cap.image(cam_id, frame)
    alpha = np.load(synthetic_capture.groundtruth / sid / f"cam{cam_id}.npz")["alpha"]
    frame_index = [f.frame for f in cap.frames()].index(frame)
    return camera, verts, head_center(verts), image, alpha[frame_index]


def _shifted(camera: Camera, du: float, dv: float) -> Camera:
    """Same camera with the principal point moved, so the head lands near an image border."""
    K = np.array(camera.K)
    K[0, 2] += du
    K[1, 2] += dv
    return Camera(K, camera.w2c, camera.width, camera.height)


def _ramp(height: int, width: int) -> np.ndarray:
    """A float image linear in (u, v) at pixel centres: bilinear sampling reproduces it exactly."""
    v, u = np.mgrid[0:height, 0:width] + 0.5
    return np.stack([0.3 * u + 0.7 * v, 2.0 * u - 0.5 * v], axis=-1)


# ----------------------------------------------------------------------------- basics


def test_head_center_is_bbox_centre() -> None:
    verts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, -4.0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(head_center(verts), [0.5, 1.0, -1.75])


def test_crop_window_camera_and_validation(scene) -> None:  # type: ignore[no-untyped-def]
    camera = scene[0]
    window = CropWindow(x0=-3, y0=7, size=40, out_size=20)
    assert window.camera(camera).allclose(camera.crop_and_resize(-3, 7, 40, 40, 20, 20))
    assert window.resampled and not CropWindow(0, 0, 5, 5).resampled
    for bad in ({"size": 0}, {"out_size": -1}, {"x0": 1.5}, {"y0": True}):
        with pytest.raises(ValueError):
            CropWindow(**{"x0": 0, "y0": 0, "size": 4, "out_size": 4, **bad})


def test_release_resolution_windows_need_no_resampling() -> None:
    # 4TB release: 1024 (h) x 667 (w); input 512 px, supervision the full 667 px width, x0 == 0
    K = np.array([[1400.0, 0.0, 333.5], [0.0, 1400.0, 512.0], [0.0, 0.0, 1.0]])
    camera = Camera(K, look_at_w2c(np.array([0.0, 0.0, 1.1]), np.zeros(3), np.array([0, 1.0, 0])), 667, 1024)
    centre = np.array([0.0, 0.05, 0.0])
    win = input_window(camera, centre, window_fraction=INPUT_WINDOW_FRACTION, out_size=512)
    assert (win.size, win.out_size) == (512, 512) and not win.resampled
    sup = supervision_window(camera, centre, out_size=667)
    assert (sup.x0, sup.size, sup.out_size) == (0, 667, 667) and not sup.resampled
    v = camera.project(centre[None])[0][0, 1]
    assert abs(sup.y0 + 333.5 - v) <= 0.5


# ----------------------------------------------------------------------------- window placement


@pytest.mark.parametrize(
    ("du", "dv", "fraction"), [(0, 0, INPUT_WINDOW_FRACTION), (40, -55, 0.9), (-30, 70, 1.6)]
)
def test_head_centre_at_window_centre(scene, du, dv, fraction) -> None:  # type: ignore[no-untyped-def]
    camera = _shifted(scene[0], du, dv)
    centre = scene[2]
    uv = camera.project(centre[None])[0][0]
    for out_size in (None, 48, 100):
        probe = input_window(camera, centre, window_fraction=fraction, out_size=1)
        win = input_window(camera, centre, window_fraction=fraction, out_size=out_size or probe.size)
        np.testing.assert_array_less(np.abs(np.array([win.x0, win.y0]) + win.size / 2 - uv), 0.5 + 1e-9)
        crop_uv = win.camera(camera).project(centre[None])[0][0]
        assert np.all(np.abs(crop_uv - win.out_size / 2) <= 0.5 * win.out_size / win.size + 1e-9)
    if (du, dv) != (0, 0):  # these windows leave the image: the head stays centred, not clamped
        assert (
            win.x0 < 0 or win.y0 < 0 or win.x0 + win.size > camera.width or win.y0 + win.size > camera.height
        )
        clamped = input_window(camera, centre, window_fraction=0.5, out_size=8, clamp=True)
        assert (
            0 <= clamped.x0 <= camera.width - clamped.size and 0 <= clamped.y0 <= camera.height - clamped.size
        )


def test_supervision_window(scene) -> None:  # type: ignore[no-untyped-def]
    camera, _, centre, _, _ = scene
    v = camera.project(centre[None])[0][0, 1]
    for out_size in (camera.width, 100):
        win = supervision_window(camera, centre, out_size=out_size)
        assert win.x0 == 0 and win.size == camera.width and win.out_size == out_size
        assert abs(win.y0 + win.size / 2 - v) <= 0.5
        crop_uv = win.camera(camera).project(centre[None])[0][0]
        assert abs(crop_uv[1] - out_size / 2) <= 0.5 * out_size / win.size + 1e-9
    narrow = supervision_window(camera, centre, window_fraction=0.5, out_size=10)
    assert narrow.x0 == int(np.floor((camera.width - narrow.size) / 2 + 0.5))  # round half up


def test_head_extent_fit_contains_the_mesh(scene) -> None:  # type: ignore[no-untyped-def]
    camera, verts, centre, _, _ = scene
    for margin, du in ((1.0, 0.0), (1.25, 0.0), (1.0, 35.0)):
        cam = _shifted(camera, du, 0.0)
        win = input_window(
            cam,
            centre,
            window_fraction=None,
            out_size=64,
            fit="head_extent",
            vertices_head=verts,
            margin=margin,
        )
        crop_uv = win.camera(cam).project(verts)[0]
        assert np.all(crop_uv >= 0.0) and np.all(crop_uv <= win.out_size)
        uv = cam.project(verts)[0]
        extent = float(np.max(uv.max(axis=0) - uv.min(axis=0)))
        assert extent <= win.size <= 2 * margin * extent + 2  # tight: about the mesh, not the image
    wide = input_window(camera, centre, out_size=64, fit="head_extent", vertices_head=verts, margin=1.5)
    assert wide.size > win.size
    with pytest.raises(ValueError):
        input_window(camera, centre, out_size=64, fit="head_extent")


# ----------------------------------------------------------------------------- cutting pixels


def test_exact_crop_is_slicing_with_black_padding(scene) -> None:  # type: ignore[no-untyped-def]
    camera, _, centre, image, alpha = scene
    h, w = alpha.shape
    inside = CropWindow(x0=5, y0=17, size=60, out_size=60)
    np.testing.assert_array_equal(cut_crop(alpha, inside), alpha[17:77, 5:65])
    np.testing.assert_array_equal(cut_crop(image, inside), image[17:77, 5:65])
    for du, dv in ((40, -55), (-30, 70)):
        win = input_window(_shifted(camera, du, dv), centre, window_fraction=0.9, out_size=75)
        assert not win.resampled
        crop = cut_crop(alpha, win)
        assert crop.dtype == alpha.dtype and crop.shape == (75, 75)
        rows = np.arange(win.y0, win.y0 + win.size)
        cols = np.arange(win.x0, win.x0 + win.size)
        valid = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
        assert 0 < valid.sum() < valid.size
        assert np.all(crop[~valid] == 0)
        expected = alpha[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)]
        np.testing.assert_array_equal(crop[valid], expected[valid])
        rgb = cut_crop(image, win)
        assert np.all(rgb[~valid] == 0) and np.array_equal(
            rgb[valid], image[np.clip(rows, 0, h - 1)][:, np.clip(cols, 0, w - 1)][valid]
        )
    far = CropWindow(x0=w + 3, y0=0, size=10, out_size=10)  # entirely outside
    assert not cut_crop(image, far).any()
    flags = cut_crop(alpha > 0, inside)  # any dtype is copied exactly
    assert flags.dtype == bool and np.array_equal(flags, alpha[17:77, 5:65] > 0)


def test_mesh_points_see_the_same_colour_in_crop_and_image(scene) -> None:  # type: ignore[no-untyped-def]
    camera, verts, centre, image, _ = scene
    uv = camera.project(verts)[0]
    orig, orig_in = _bilinear(image, uv)
    # exact window (no resampling): identical samples
    win = input_window(camera, centre, window_fraction=INPUT_WINDOW_FRACTION, out_size=1)
    win = CropWindow(win.x0, win.y0, win.size, win.size)
    crop_uv = win.camera(camera).project(verts)[0]
    got, got_in = _bilinear(cut_crop(image, win), crop_uv)
    both = orig_in & got_in
    assert both.sum() > 100
    np.testing.assert_allclose(got[both], orig[both], atol=1e-9)
    # resampled (down and up): close; a half-pixel convention slip would be much worse
    for out_size in (win.size // 2, win.size * 2):
        for resample in ("area", "bilinear"):
            rwin = CropWindow(win.x0, win.y0, win.size, out_size)
            crop = cut_crop(image, rwin, resample=resample)
            crop_uv = rwin.camera(camera).project(verts)[0]
            got, got_in = _bilinear(crop, crop_uv)
            both = orig_in & got_in
            err = float(np.mean(np.abs(got[both] - orig[both])))
            slip = rwin.camera(camera).project(verts)[0] - 0.5 * (out_size / win.size - 1.0)
            wrong, _ = _bilinear(crop, slip)
            err_wrong = float(np.mean(np.abs(wrong[both] - orig[both])))
            assert err < 10.0, (out_size, resample, err)
            assert err < err_wrong, (out_size, resample, err, err_wrong)


@pytest.mark.parametrize("resample", ["area", "bilinear"])
@pytest.mark.parametrize(("size", "out_size"), [(64, 16), (64, 48), (60, 90), (83, 128)])
def test_resampling_follows_the_intrinsics_convention(size, out_size, resample) -> None:  # type: ignore[no-untyped-def]
    # a linear ramp image: the crop sampled at a point's crop coordinates must give the ramp's value at the
    # point's image coordinates, up to the filter's quantisation (area treats pixels as constant squares, so
    # it is a staircase when enlarging) and with no systematic shift (a half-pixel slip moves the mean)
    height, width = 128, 83
    image = _ramp(height, width)
    K = np.array([[90.0, 0.0, 41.5], [0.0, 90.0, 64.0], [0.0, 0.0, 1.0]])
    camera = Camera(
        K, look_at_w2c(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0, 1.0, 0])), width, height
    )
    win = CropWindow(x0=(width - size) // 2, y0=20, size=size, out_size=out_size)
    crop = cut_crop(image, win, resample=resample)
    assert crop.shape == (out_size, out_size, 2) and crop.dtype == image.dtype
    rng = np.random.default_rng(0)
    # points whose crop position is at least 2 output pixels and 2 source pixels from the window border,
    # and inside the source image (the ramp is not linear across the black padding)
    border = 2.0 + 2.0 * out_size / size
    crop_uv = rng.uniform(border, out_size - border, size=(400, 2))
    src_uv = crop_uv * size / out_size + np.array([win.x0, win.y0])
    keep = (src_uv[:, 0] > 2) & (src_uv[:, 0] < width - 2)
    points = camera.unproject(src_uv[keep], np.full(keep.sum(), 1.0))
    np.testing.assert_allclose(win.camera(camera).project(points)[0], crop_uv[keep], atol=1e-9)
    got, _ = _bilinear(crop, crop_uv[keep])
    expected, _ = _bilinear(image, src_uv[keep])
    err = np.abs(got - expected) / np.array([1.0, 2.0])  # in source pixels along the ramp's steeper axis
    assert err.max() < 0.3
    assert abs(float(np.mean(got - expected))) < 0.05


def test_resampling_dtypes() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(30, 20, 3), dtype=np.uint8)
    win = CropWindow(x0=-4, y0=2, size=24, out_size=12)
    crop = cut_crop(image, win)
    assert crop.dtype == np.uint8 and crop.shape == (12, 12, 3)
    blocks = np.zeros((24, 24, 3))
    blocks[:, 4:] = image[2:26, :20]
    np.testing.assert_array_equal(crop, np.rint(blocks.reshape(12, 2, 12, 2, 3).mean(axis=(1, 3))))
    alpha = rng.uniform(size=(30, 20)).astype(np.float32)
    out = cut_crop(alpha, win, resample="bilinear")
    assert out.dtype == np.float32 and out.shape == (12, 12) and out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ValueError):
        cut_crop(image.astype(np.int16), win)
    with pytest.raises(ValueError):
        cut_crop(image, win, resample="cubic")  # type: ignore[arg-type]
    for size, out_size in ((7, 3), (3, 7), (667, 512)):
        m = resample_matrix(size, out_size)
        np.testing.assert_allclose(m.sum(axis=1), 1.0)
        np.testing.assert_allclose(m.sum(axis=0), out_size / size)  # area: every source pixel counts equally

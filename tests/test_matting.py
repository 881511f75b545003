"""Matting algorithms: plate difference against the synthetic ground truth, composites, backend factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.matting import (
    PlateDifferenceParams,
    alpha_to_uint8,
    composite_on_black,
    make_matter,
    mask_to_alpha,
    plate_difference_matte,
)
from avat3r_core.matting.composite import premultiply
from avat3r_core.matting.plate_difference import plate_difference_alpha, reduce_plate, reduction_factor
from avat3r_core.models.bgmv2 import write_random_checkpoint
from avat3r_core.stages.matting import shipped_alpha


def _iou(alpha: np.ndarray, truth: np.ndarray) -> float:
    pred, true = alpha > 0.5, truth > 127
    union = np.count_nonzero(pred | true)
    return np.count_nonzero(pred & true) / union if union else 1.0


def _samples(capture, limit: int | None = None) -> list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]]:
    """(camera, frame, image, plate, true alpha uint8) for every present image of the first subject."""
    sid = capture.subjects[0]
    reader = Ava256Capture(capture.root, sid)
    frame_ids = list(np.load(capture.groundtruth / sid / "head_pose.npz")["frame_ids"])
    out = []
    for cam in reader.camera_ids:
        plate = reader.background(cam)
        truth = np.load(capture.groundtruth / sid / f"cam{cam}.npz")["alpha"]
        for frame in reader.frames():
            if not reader.has_image(cam, frame.frame):
                continue  # the capture drops a few images on purpose, like Ava-256
            out.append(
                (cam, frame.frame, reader.image(cam, frame.frame), plate, truth[frame_ids.index(frame.frame)])
            )
            if limit is not None and len(out) >= limit:
                return out
    return out


@pytest.fixture(scope="module")
def samples(synthetic_capture) -> list[tuple[str, int, np.ndarray, np.ndarray, np.ndarray]]:
    return _samples(synthetic_capture)


def test_plate_difference_iou_on_synthetic_capture(samples) -> None:
    ious = [
        (_iou(plate_difference_matte(img, plate), truth), cam, frame)
        for cam, frame, img, plate, truth in samples
    ]
    values = np.array([v for v, _, _ in ious])
    worst = min(ious)
    print(
        f"plate difference: {len(values)} images, mean IoU {values.mean():.4f}, min {worst[0]:.4f} "
        f"(camera {worst[1]}, frame {worst[2]})"
    )
    assert len(values) > 20
    assert values.mean() >= 0.95
    assert worst[0] >= 0.9


def test_alpha_is_soft_at_the_edge_only(samples) -> None:
    _, _, image, plate, truth = samples[len(samples) // 2]
    alpha = plate_difference_matte(image, plate)
    assert alpha.dtype == np.float32 and alpha.shape == truth.shape
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    fg = truth > 127
    near = ndimage.binary_dilation(fg, iterations=2) & ~ndimage.binary_erosion(fg, iterations=2)
    far_inside = ndimage.binary_erosion(fg, iterations=5)
    far_outside = ~ndimage.binary_dilation(fg, iterations=5)
    fractional = (alpha > 0.05) & (alpha < 0.95)
    assert np.count_nonzero(fractional & near) >= 10
    assert far_inside.any() and np.all(alpha[far_inside] == 1.0)  # the interior is exactly opaque
    assert not np.any(fractional & far_outside)  # fractional alpha only along the edge


def test_robust_to_noise_and_plate_exposure(samples) -> None:
    rng = np.random.default_rng(0)
    picks = samples[:: max(1, len(samples) // 6)]
    ious = []
    for _, _, image, plate, truth in picks:
        noisy = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        brighter = np.clip(plate * 1.05 + rng.normal(0, 3, plate.shape), 0, 255).astype(np.uint8)
        ious.append(_iou(plate_difference_matte(noisy, brighter), truth))
    print(f"noise 3 + plate exposure x1.05: mean IoU {np.mean(ious):.4f}, min {np.min(ious):.4f}")
    assert np.mean(ious) >= 0.95


def test_empty_frames_give_zeros(samples) -> None:
    _, _, image, plate, _ = samples[0]
    rng = np.random.default_rng(1)
    black = np.zeros_like(image)
    plate_only = np.clip(plate + rng.normal(0, 1.5, plate.shape), 0, 255).astype(np.uint8)
    for frame in (black, plate.copy(), plate_only):
        alpha = plate_difference_matte(frame, plate)
        assert alpha.dtype == np.float32 and alpha.shape == image.shape[:2]
        assert not alpha.any()
    tiny = np.zeros((3, 3, 3), np.uint8)
    assert not plate_difference_matte(tiny, tiny).any()


def test_plate_difference_rejects_bad_input() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        plate_difference_matte(image, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        plate_difference_matte(image.astype(np.float32), image)
    with pytest.raises(ValueError, match="smooth"):
        PlateDifferenceParams(smooth=0)


def test_composite_modes() -> None:
    image = np.full((2, 3, 3), 200, np.uint8)
    alpha = np.array([[0.0, 0.5, 1.0], [0.25, 1.2, -0.1]], np.float32)
    src = composite_on_black(image, alpha)
    assert src.dtype == np.uint8
    np.testing.assert_array_equal(src[..., 0], [[0, 100, 200], [50, 200, 0]])
    fgr = np.full((2, 3, 3), 0.5, np.float32)
    out = composite_on_black(image, alpha, fgr, mode="fgr")
    np.testing.assert_array_equal(out[..., 1], [[0, 64, 128], [32, 128, 0]])  # 63.75 -> 64, 127.5 -> 128
    batch = composite_on_black(image[None].repeat(2, 0), alpha[None].repeat(2, 0))
    assert batch.shape == (2, 2, 3, 3)
    with pytest.raises(ValueError, match="foreground"):
        composite_on_black(image, alpha, mode="fgr")
    with pytest.raises(ValueError, match="mode"):
        composite_on_black(image, alpha, mode="over")
    with pytest.raises(ValueError, match="alpha shape"):
        composite_on_black(image, alpha[:1])
    np.testing.assert_array_equal(
        alpha_to_uint8(np.array([0.0, 0.5, 1.0, 2.0], np.float32)), [0, 128, 255, 255]
    )
    np.testing.assert_array_equal(mask_to_alpha(np.array([0, 255], np.uint8)), [0.0, 1.0])


def test_plate_difference_backend(samples) -> None:
    matter = make_matter("plate_difference", {"edge_sigma": 0.5, "device": None})
    assert matter.name == "plate_difference" and matter.needs_plate and not matter.provides_foreground
    assert "edge_sigma=0.5" in matter.description
    _, _, image, plate, truth = samples[0]
    alpha, fgr = matter(np.stack([image, image]), plate)
    assert fgr is None and alpha.shape == (2, *truth.shape) and alpha.dtype == np.uint8  # the stored alpha
    np.testing.assert_array_equal(
        alpha[0], alpha_to_uint8(plate_difference_matte(image, plate, PlateDifferenceParams(edge_sigma=0.5)))
    )


def test_bgmv2_backend_random_checkpoint(samples, tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint(tmp_path / "pytorch_mobilenetv2.pth", backbone="mobilenetv2", seed=3)
    matter = make_matter(
        "bgmv2",
        {"checkpoint": str(checkpoint), "backbone": "mobilenetv2", "refine_mode": "full", "device": "cpu"},
    )
    assert matter.name == "bgmv2" and matter.needs_plate and matter.provides_foreground
    assert "RANDOM WEIGHTS" in matter.description
    _, _, image, plate, _ = samples[0]
    images = np.stack([image, image[::-1].copy()])
    alpha, fgr = matter(images, np.stack([plate, plate]))
    h, w = image.shape[:2]
    assert alpha.shape == (2, h, w) and alpha.dtype == np.float32
    assert fgr is not None and fgr.shape == (2, h, w, 3) and fgr.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() <= 1 and fgr.min() >= 0 and fgr.max() <= 1
    assert composite_on_black(images, alpha, fgr, mode="fgr").shape == images.shape


@pytest.mark.parametrize(
    ("backend", "options", "match"),
    [
        ("matte_magic", {}, "matte_magic"),
        ("dataset", {}, "dataset"),
        ("plate_difference", {"edge_sigmaa": 1.0}, "edge_sigmaa"),
        ("plate_difference", {"high_floor": "high"}, "plate_difference"),
        ("plate_difference", {"black_level": 300}, "black_level"),
        ("bgmv2", {}, "checkpoint"),
        ("bgmv2", {"checkpoint": "x.pth", "refine": "full"}, "refine"),
    ],
)
def test_bad_backend_or_option(backend: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_matter(backend, options)


def test_premultiply_is_the_float_composite_bit_for_bit() -> None:
    """Every (value, alpha) pair: the integer composite the crop stage uses equals composite_on_black."""
    levels = np.arange(256, dtype=np.uint8)
    alpha, value = np.meshgrid(levels, levels, indexing="ij")
    image = np.ascontiguousarray(np.stack([value, value[::-1], value.T], axis=-1))
    expected = composite_on_black(image, alpha.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(premultiply(image, np.ascontiguousarray(alpha)), expected)
    np.testing.assert_array_equal(premultiply(image[10:50, 3:90], alpha[10:50, 3:90]), expected[10:50, 3:90])
    # The same pairs inside a matte that is mostly 0 and 255, as real mattes are (the bitwise path).
    wide_alpha = np.zeros((256, 256 * 9), dtype=np.uint8)
    wide_alpha[:, :256], wide_alpha[:, 256 * 4 : 256 * 8] = alpha, 255
    wide_image = np.ascontiguousarray(np.concatenate([image] * 9, axis=1))
    wide_expected = composite_on_black(wide_image, wide_alpha.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(premultiply(wide_image, wide_alpha), wide_expected)
    np.testing.assert_array_equal(
        premultiply(wide_image[7:200, 5:2300], wide_alpha[7:200, 5:2300]), wide_expected[7:200, 5:2300]
    )
    with pytest.raises(ValueError, match="alpha must be uint8"):
        premultiply(image, alpha.astype(np.float32))


def test_a_shipped_mask_is_stored_as_it_is() -> None:
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(alpha_to_uint8(mask_to_alpha(levels)), levels)
    assert shipped_alpha(levels) is levels
    with pytest.raises(TypeError, match="uint8"):
        shipped_alpha(levels.astype(np.int32))


def _upscaled(samples, factor: int, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, plate, true alpha) of a few samples upscaled `factor` times (bilinear): images tall enough for
    the reduced detection path without generating a larger capture."""
    from PIL import Image

    def up(array: np.ndarray) -> np.ndarray:
        height, width = array.shape[:2]
        return np.asarray(Image.fromarray(array).resize((width * factor, height * factor), Image.BILINEAR))

    picks = samples[:: max(1, len(samples) // count)][:count]
    return [(up(image), up(plate), up(truth)) for _, _, image, plate, truth in picks]


def test_reduced_detection_keeps_full_resolution_edges(samples) -> None:
    """Images at least twice `work_height` tall are detected on block means with full-resolution edges: the
    IoU stays at the reference's (every step at full resolution), the alpha is soft along the edge only."""
    reduced, reference = PlateDifferenceParams(), PlateDifferenceParams(work_height=0)
    ious, reference_ious = [], []
    for image, plate, truth in _upscaled(samples, 4, 6):  # 512 px tall: 2x2 blocks
        alpha = plate_difference_alpha(image, plate, reduced)
        assert alpha.dtype == np.uint8 and alpha.shape == truth.shape
        small = reduce_plate(plate, reduced)
        np.testing.assert_array_equal(plate_difference_alpha(image, plate, reduced, small_plate=small), alpha)
        np.testing.assert_array_equal(alpha_to_uint8(plate_difference_matte(image, plate, reduced)), alpha)
        ious.append(_iou(alpha / 255.0, truth))
        reference_ious.append(_iou(plate_difference_matte(image, plate, reference), truth))
        assert np.all(alpha[ndimage.binary_erosion(truth > 127, iterations=8)] == 255)
        assert np.count_nonzero((alpha > 12) & (alpha < 243)) >= 10  # soft edges
    print(f"reduced detection: mean IoU {np.mean(ious):.4f} (reference {np.mean(reference_ious):.4f})")
    # Upscaled 128 px images are blurry (the reference reaches ~0.96 only); at the release's 1024 px the
    # benchmark (benchmarks/preprocess.py) measures ~0.99 for both.
    assert np.mean(ious) >= 0.93 and np.mean(ious) >= np.mean(reference_ious) - 0.02
    assert reduction_factor(2 * 256, reduced) == 2 and reduction_factor(2 * 256, reference) == 1


def test_reduced_detection_of_empty_frames(samples) -> None:
    image, plate, _ = _upscaled(samples, 4, 1)[0]
    for frame in (np.zeros_like(image), plate.copy()):
        alpha = plate_difference_alpha(frame, plate)
        assert alpha.dtype == np.uint8 and alpha.shape == image.shape[:2] and not alpha.any()

"""Matting and crop stages on the synthetic capture, checked against its ground truth; bad input."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.errors import CaptureError
from avat3r_core.geometry.crops import CropWindow, cut_crop
from avat3r_core.matting.composite import composite_on_black
from avat3r_core.stages.crop import run_crop
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.matting import needed_images, run_matting
from avat3r_core.store.manifest import verify_store
from avat3r_core.store.zarr_store import open_store
from tests.helpers import STAGES, plan, rewrite_member


def true_alpha(groundtruth: Path, subject: str, camera: str, frame: int) -> np.ndarray:
    order = json.loads((groundtruth / subject / "meta.json").read_text())["frame_ids"]
    return np.load(groundtruth / subject / f"cam{camera}.npz")["alpha"][order.index(frame)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_plate_difference_matting_reaches_iou_095(stores, synthetic_capture) -> None:
    assert stores["summary"]["iou_mean"] >= 0.95
    group = open_store(stores["out"] / "matting.zarr")
    cameras = [str(c) for c in group["camera_ids"][...]]
    frames = [int(f) for f in group["frames"][...]]
    valid = group["valid"][...]
    scores = []
    for c, t in zip(*np.nonzero(valid), strict=True):
        truth = true_alpha(synthetic_capture.groundtruth, stores["subject"], cameras[c], frames[t])
        scores.append(iou(group["alpha"][c, t] > 127, truth > 127))
    assert len(scores) == valid.sum() > 50
    assert np.mean(scores) == pytest.approx(stores["summary"]["iou_mean"], abs=1e-9)
    assert np.mean(scores) >= 0.95
    assert verify_store(stores["out"] / "matting.zarr") == []
    assert group.attrs["random_weights"] is False and group.attrs["stage"] == "matting"


def test_input_crops_are_centred_on_the_head_and_match_the_composite(stores) -> None:
    group = open_store(stores["out"] / "crops.zarr")
    reader, index = stores["reader"], stores["index"]
    cameras = [str(c) for c in group["input/camera_ids"][...]]
    frames = [int(f) for f in group["input/frames"][...]]
    matting = open_store(stores["out"] / "matting.zarr")
    m_cam = {str(c): i for i, c in enumerate(matting["camera_ids"][...])}
    m_frame = {int(f): i for i, f in enumerate(matting["frames"][...])}
    valid = group["input/valid"][...]
    checked = 0
    for c, t in list(zip(*np.nonzero(valid), strict=True))[:12]:
        K, w2c = group["input/K"][c, t], group["input/w2c_head"][c, t]
        x0, y0, size, out_size = group["input/window"][c, t]
        # The head centre (head-local) projects to the crop centre through (K_crop, w2c_head).
        cam = K @ (w2c[:3, :3] @ index.head_center + w2c[:3, 3])
        assert np.allclose(cam[:2] / cam[2], out_size / 2, atol=1.0)
        # The crop is exactly the matted image's window (no resampling at this size ratio).
        alpha = matting["alpha"][m_cam[cameras[c]], m_frame[frames[t]]].astype(np.float32) / 255
        composite = composite_on_black(reader.image(cameras[c], frames[t]), alpha)
        expected = cut_crop(composite, CropWindow(int(x0), int(y0), int(size), int(out_size)))
        assert np.array_equal(group["input/rgb"][c, t], expected)
        checked += 1
    assert checked == 12


def test_supervision_crops_span_the_image_width_and_match_true_alpha(stores, synthetic_capture) -> None:
    group = open_store(stores["out"] / "crops.zarr")
    cameras = [str(c) for c in group["supervision/camera_ids"][...]]
    frames = [int(f) for f in group["supervision/frames"][...]]
    valid = group["supervision/valid"][...]
    windows = group["supervision/window"][...]
    assert (windows[valid][:, 0] == 0).all() and (windows[valid][:, 2] == 83).all()
    scores = []
    for c, t in zip(*np.nonzero(valid), strict=True):
        x0, y0, size, out_size = windows[c, t]
        truth = true_alpha(synthetic_capture.groundtruth, stores["subject"], cameras[c], frames[t])
        truth_crop = cut_crop(truth, CropWindow(int(x0), int(y0), int(size), int(out_size)))
        scores.append(iou(group["supervision/alpha"][c, t] > 127, truth_crop > 127))
    assert np.mean(scores) >= 0.95
    # Each image is composited once for its input and supervision crops: the alpha crops are exact cuts
    # (the rgb ones are JPEG-coded here; the input crops, lossless, are checked against the composite).
    matting = open_store(stores["out"] / "matting.zarr")
    m_cam = {str(c): i for i, c in enumerate(matting["camera_ids"][...])}
    m_frame = {int(f): i for i, f in enumerate(matting["frames"][...])}
    for c, t in list(zip(*np.nonzero(valid), strict=True))[:8]:
        window = CropWindow(*(int(v) for v in windows[c, t]))
        alpha = matting["alpha"][m_cam[cameras[c]], m_frame[frames[t]]]
        assert np.array_equal(group["supervision/alpha"][c, t], cut_crop(alpha, window))
    assert verify_store(stores["out"] / "crops.zarr") == []


def test_dataset_backend_uses_the_shipped_masks(synthetic_capture, tmp_path) -> None:
    reader, index, frames, views = plan(synthetic_capture.root, synthetic_capture.subjects[1])
    cfg = dict(STAGES["matting"], backend="dataset")
    summary = run_matting(
        reader,
        index,
        frames,
        views,
        cfg,
        tmp_path / "m.zarr",
        groundtruth=synthetic_capture.groundtruth,
        progress=False,
    )
    assert summary["iou_mean"] >= 0.97 and summary["backend"] == "capture-shipped foreground masks"


def _black_avif(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(buffer, format="AVIF", quality=90)
    return buffer.getvalue()


def test_blank_image_is_skipped_and_counted_or_an_error(capture_copy, tmp_path, caplog) -> None:
    tmp_path = tmp_path / "out"
    subject = capture_copy.subjects[0]
    reader, index, frames, views = plan(capture_copy.root, subject)
    camera, frame = views["input_views"][0]
    archive = reader.decoder / "image" / f"cam{camera}.zip"
    rewrite_member(archive, f"cam{camera}/{frame:06d}.avif", _black_avif((*index.image_size, 3)))
    reader = Ava256Capture(capture_copy.root, subject)
    with caplog.at_level("WARNING"):
        summary = run_matting(
            reader, index, frames, views, STAGES["matting"], tmp_path / "m.zarr", progress=False
        )
    assert summary["blank"] == 1
    assert f"subject {subject}, camera {camera}, frame {frame}: blank image skipped" in caplog.text
    strict = dict(STAGES["matting"], bad_image="error")
    with pytest.raises(
        CaptureError, match=f"subject {subject}, camera {camera}, frame {frame}: image is blank"
    ):
        run_matting(reader, index, frames, views, strict, tmp_path / "strict.zarr", progress=False)
    assert not (tmp_path / "strict.zarr").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"], "no temporary folder may stay behind"


def test_missing_background_plate_is_a_clear_error(capture_copy, tmp_path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    subject = capture_copy.subjects[0]
    reader, index, frames, views = plan(capture_copy.root, subject)
    camera = index.camera_ids[0]
    archive = reader.decoder / "background_image" / "background_image.zip"
    with zipfile.ZipFile(archive) as source:
        kept = {n: source.read(n) for n in source.namelist() if n != f"{camera}.avif"}
    with zipfile.ZipFile(archive, "w") as target:
        for name, data in kept.items():
            target.writestr(name, data)
    reader = Ava256Capture(capture_copy.root, subject)
    with pytest.raises(CaptureError) as caught:
        run_matting(reader, index, frames, views, STAGES["matting"], tmp_path / "m.zarr", progress=False)
    assert (
        str(caught.value) == f"subject {subject}, camera {camera}, file {archive}: missing background plate"
    )
    assert list(tmp_path.iterdir()) == []


class _CountingReader(Ava256Capture):
    """Counts image decodes per (camera, frame)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decoded: Counter[tuple[str, int]] = Counter()

    def image(self, camera: str, frame: int) -> np.ndarray:
        self.decoded[camera, frame] += 1
        return super().image(camera, frame)


def test_crop_decodes_each_image_once(stores, synthetic_capture, tmp_path) -> None:
    reader = _CountingReader(synthetic_capture.root, stores["subject"])
    index, views = stores["index"], stores["views"]
    frames = select_frames(index.data, STAGES["frames"], seed=0)
    counts = run_crop(
        reader,
        index,
        frames,
        views,
        stores["out"] / "matting.zarr",
        STAGES["crop"],
        "src",
        tmp_path / "crops.zarr",
        progress=False,
    )
    assert reader.decoded and max(reader.decoded.values()) == 1
    both = {(c, int(f)) for c, f in views["input_views"]} & {
        (c, int(f)) for c in index.camera_ids for f in frames["supervision"]
    }
    assert both and both <= set(reader.decoded)  # images cropped for both sets were decoded once too
    group = open_store(tmp_path / "crops.zarr")
    assert counts["input_crops"] == int(group["input/valid"][...].sum()) > 0
    for name in ("input/rgb", "supervision/alpha"):  # the same crops as the session's store
        np.testing.assert_array_equal(group[name][...], open_store(stores["out"] / "crops.zarr")[name][...])


def test_dataset_backend_leaves_blank_images_to_the_crop_stage(capture_copy, tmp_path, caplog) -> None:
    """The dataset backend decodes masks only; the crop stage, which decodes the images, applies
    matting.bad_image (skip and count, or error) from the matting store's config."""
    subject = capture_copy.subjects[0]
    reader, index, frames, views = plan(capture_copy.root, subject)
    camera, frame = views["input_views"][0]
    archive = reader.decoder / "image" / f"cam{camera}.zip"
    rewrite_member(archive, f"cam{camera}/{frame:06d}.avif", _black_avif((*index.image_size, 3)))
    for bad_image in ("skip", "error"):
        reader = _CountingReader(capture_copy.root, subject)
        cfg = dict(STAGES["matting"], backend="dataset", bad_image=bad_image)
        out = tmp_path / bad_image
        summary = run_matting(reader, index, frames, views, cfg, out / "matting.zarr", progress=False)
        assert summary["blank"] is None and not reader.decoded  # no image decoded by the matting stage
        assert summary["matted"] == sum(map(len, needed_images(index, frames, views).values()))
        args = (reader, index, frames, views, out / "matting.zarr", STAGES["crop"], "src", out / "crops.zarr")
        if bad_image == "error":
            with pytest.raises(
                CaptureError, match=f"subject {subject}, camera {camera}, frame {frame}: image is blank"
            ):
                run_crop(*args, progress=False)
            assert not (out / "crops.zarr").exists()
            continue
        with caplog.at_level("WARNING"):
            counts = run_crop(*args, progress=False)
        assert counts["blank"] == 1
        assert f"subject {subject}, camera {camera}, frame {frame}: blank image skipped" in caplog.text
        group = open_store(out / "crops.zarr")
        c = [str(x) for x in group["input/camera_ids"][...]].index(camera)
        t = [int(x) for x in group["input/frames"][...]].index(frame)
        assert not group["input/valid"][c, t] and not group["input/rgb"][c, t].any()
        assert verify_store(out / "crops.zarr") == []

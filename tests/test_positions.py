"""Position maps: the mesh backend against the synthetic ground truth, store layout and confidence scale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avat3r_core.geometry.transforms import invert_rigid
from avat3r_core.stages.positions import InputCrops, run_positions
from avat3r_core.store.zarr_store import open_store

POSITIONS = {"backend": "mesh"}


def test_mesh_positions_match_the_true_surface_to_1mm(mesh_positions, synthetic_capture) -> None:
    """Where the ground truth shows the tracked mesh, the stored position equals the true surface point."""
    out, subject, index = mesh_positions["out"], mesh_positions["subject"], mesh_positions["index"]
    group = open_store(out / "positions.zarr")
    crops = InputCrops(out / "crops.zarr")
    windows = open_store(out / "crops.zarr")["input/window"][...]
    gt = synthetic_capture.groundtruth / subject
    order = json.loads((gt / "meta.json").read_text())["frame_ids"]
    errors = []
    for c, t in list(zip(*np.nonzero(group["valid"][...]), strict=True))[:20]:
        camera, frame = crops.camera_ids[c], crops.frames[t]
        x0, y0, size, out_size = windows[c, t]
        assert size == out_size  # no resampling at this size: crop pixel (i, j) is image pixel (y0+i, x0+j)
        truth = np.load(gt / f"cam{camera}.npz")
        depth, tracked = truth["depth"][order.index(frame)], truth["tracked"][order.index(frame)]
        rows, cols = np.mgrid[0:size, 0:size]
        rows, cols = rows + y0, cols + x0
        inside = (rows >= 0) & (rows < depth.shape[0]) & (cols >= 0) & (cols < depth.shape[1])
        sel = np.zeros((size, size), dtype=bool)
        sel[inside] = tracked[rows[inside], cols[inside]]
        assert sel.sum() > 50
        world_camera = index.cameras[camera]
        uv = np.stack([cols[sel] + 0.5, rows[sel] + 0.5], axis=1)
        world = world_camera.unproject(uv, depth[rows[sel], cols[sel]].astype(np.float64))
        head = (invert_rigid(index.head_to_world(frame)) @ np.c_[world, np.ones(len(world))].T).T[:, :3]
        stored = group["position"][c, t].transpose(1, 2, 0)[sel]
        assert (group["confidence"][c, t][sel] == 1).all()
        errors.append(np.linalg.norm(stored - head, axis=1))
    errors = np.concatenate(errors)
    median, p99 = np.median(errors) * 1e3, np.percentile(errors, 99) * 1e3
    print(f"mesh positions: median {median:.4f} mm, 99th percentile {p99:.4f} mm")
    assert np.percentile(errors, 99) < 1e-3


def test_confidence_is_zero_off_the_mesh_and_store_is_labelled(mesh_positions) -> None:
    group = open_store(mesh_positions["out"] / "positions.zarr")
    valid = group["valid"][...]
    assert valid.sum() == len(mesh_positions["views"]["input_views"])
    c, t = np.argwhere(valid)[0]
    conf = group["confidence"][c, t]
    pos = group["position"][c, t]
    assert set(np.unique(conf)) <= {0.0, 1.0}
    assert np.all(pos[:, conf == 0] == 0)
    assert 0.05 < mesh_positions["summary"]["mean_coverage"] < 0.9
    assert group.attrs["random_weights"] is False
    assert group["position"].shape[2] == 3  # (Ci, Ti, 3, H, W)


# -- the dust3r backend, with a tiny random network (shapes, files, labels; the maths is tested elsewhere) --
DUST3R = {
    "window": "portrait",
    "resolution": 64,
    "batch_size": 12,
    "iterations": 5,
    "lr": 0.01,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tiny_dust3r(tmp_path_factory) -> str:
    from avat3r_core.models.dust3r.checkpoint import write_random_dust3r

    return str(write_random_dust3r(tmp_path_factory.mktemp("dust3r") / "tiny.pth"))


def test_portrait_window_shifts_the_intrinsics() -> None:
    from avat3r_core.geometry.cameras import Camera
    from avat3r_core.positions.dust3r import dust3r_window

    x0, width, height_d, width_d = dust3r_window(512, {"window": "portrait", "resolution": 512})
    assert (x0, width, height_d, width_d) == (64, 384, 512, 384)
    x0, width, height_d, width_d = dust3r_window(128, {"window": "portrait", "resolution": 512})
    assert (x0, width, height_d, width_d) == (16, 96, 512, 384)
    crop = Camera(
        K=np.array([[150.0, 0, 64], [0, 150.0, 64], [0, 0, 1]]), w2c=np.eye(4), width=128, height=128
    )
    view = crop.crop(x0, 0, width, 128).resize(width_d, height_d)
    point = np.array([[0.05, -0.02, 1.0]])
    u, v = crop.project(point)[0][0]
    ud, vd = view.project(point)[0][0]
    assert ud == pytest.approx((u - x0) * width_d / width) and vd == pytest.approx(v * height_d / 128)


def test_dust3r_backend_writes_labelled_maps(mesh_positions, synthetic_capture, tiny_dust3r) -> None:
    from avat3r_core.capture.ava256 import Ava256Capture

    out, subject = mesh_positions["out"], mesh_positions["subject"]
    views = dict(mesh_positions["views"], input_views=mesh_positions["views"]["input_views"][:3])
    cfg = {"backend": "dust3r", "dust3r": dict(DUST3R, checkpoint=tiny_dust3r)}
    reader = Ava256Capture(synthetic_capture.root, subject)
    summary = run_positions(reader, out / "crops.zarr", views, cfg, out / "dust3r.zarr", progress=False)
    group = open_store(out / "dust3r.zarr")
    assert group.attrs["random_weights"] is True and "RANDOM WEIGHTS" in summary["backend"]
    assert group["valid"][...].sum() == 3
    c, t = np.argwhere(group["valid"][...])[0]
    conf = group["confidence"][c, t]
    assert np.isfinite(group["position"][c, t]).all()
    assert (conf[:, :8] == 0).all() and (conf[:, -8:] == 0).all()  # the strips DUSt3R does not see
    assert ((conf[:, 8:-8] > 0) & (conf[:, 8:-8] < 1)).all()


def test_dust3r_backend_errors_name_subject_camera_and_frame(
    mesh_positions, synthetic_capture, tiny_dust3r, monkeypatch
) -> None:
    from avat3r_core.capture.ava256 import Ava256Capture
    from avat3r_core.errors import CaptureError
    from avat3r_core.models.dust3r.alignment import AlignmentDivergedError
    from avat3r_core.positions import dust3r as backend

    out, subject = mesh_positions["out"], mesh_positions["subject"]
    camera, frame = mesh_positions["views"]["input_views"][0]
    views = dict(mesh_positions["views"], input_views=[[camera, frame]])
    short = json_copy(views)
    short["partners_per_timestep"][camera][str(frame)] = short["partners_per_timestep"][camera][str(frame)][
        :2
    ]
    cfg = {"backend": "dust3r", "dust3r": dict(DUST3R, checkpoint=tiny_dust3r)}
    reader = Ava256Capture(synthetic_capture.root, subject)
    with pytest.raises(
        CaptureError, match=f"subject {subject}, camera {camera}, frame {frame}: input view has 2 partner"
    ):
        run_positions(reader, out / "crops.zarr", short, cfg, out / "short.zarr", progress=False)

    def diverge(*args, **kwargs):
        raise AlignmentDivergedError("loss is NaN at iteration 3")

    monkeypatch.setattr(backend, "align_known_cameras", diverge)
    with pytest.raises(
        CaptureError, match=f"subject {subject}, camera {camera}, frame {frame}: DUSt3R alignment diverged"
    ):
        run_positions(reader, out / "crops.zarr", views, cfg, out / "nan.zarr", progress=False)
    assert not (out / "short.zarr").exists() and not (out / "nan.zarr").exists()
    assert not list(out.glob(".*.tmp-*")), "no half-written store may stay behind"


def json_copy(value: dict) -> dict:
    return json.loads(json.dumps(value))

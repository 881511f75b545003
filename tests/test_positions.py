"""Position maps: the mesh backend against the synthetic ground truth, store layout and confidence scale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avat3r_core.geometry.transforms import invert_rigid
from avat3r_core.stages.crop import run_crop
from avat3r_core.stages.matting import run_matting
from avat3r_core.stages.positions import InputCrops, run_positions
from avat3r_core.store.zarr_store import open_store
from tests.test_preprocess_stages import CONFIG, plan

POSITIONS = {"backend": "mesh"}


@pytest.fixture(scope="module")
def mesh_positions(synthetic_capture, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("positions")
    subject = synthetic_capture.subjects[0]
    reader, index, frames, views = plan(synthetic_capture.root, subject)
    run_matting(reader, index, frames, views, CONFIG["matting"], out / "matting.zarr", progress=False)
    run_crop(
        reader,
        index,
        frames,
        views,
        out / "matting.zarr",
        CONFIG["crop"],
        "src",
        out / "crops.zarr",
        progress=False,
    )
    summary = run_positions(
        reader, out / "crops.zarr", views, POSITIONS, out / "positions.zarr", progress=False
    )
    return {"out": out, "subject": subject, "index": index, "views": views, "summary": summary}


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

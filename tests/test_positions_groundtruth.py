"""The `groundtruth` positions backend: ORACLE maps from the synthetic ground truth (synthetic only)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import yaml

from avat3r_core.cli import main
from avat3r_core.errors import CaptureError, ConfigError
from avat3r_core.geometry.cameras import Camera
from avat3r_core.positions.groundtruth import groundtruth_position_map, source_pixels
from avat3r_core.stages.positions import InputCrops, run_positions
from avat3r_core.store.manifest import verify_store
from avat3r_core.store.zarr_store import open_store
from tests.test_workflow import run_snakemake, tiny_config

GROUNDTRUTH = {"backend": "groundtruth"}


@pytest.fixture(scope="module")
def gt_positions(mesh_positions, synthetic_capture, tmp_path_factory) -> dict:
    """Ground-truth position maps of the same input crops as the session's mesh maps."""
    out = tmp_path_factory.mktemp("gt_positions") / "positions.zarr"
    summary = run_positions(
        mesh_positions["reader"],
        mesh_positions["out"] / "crops.zarr",
        mesh_positions["views"],
        GROUNDTRUTH,
        out,
        groundtruth=synthetic_capture.groundtruth,
        progress=False,
    )
    return {"path": out, "summary": summary}


def _tracked_in_crop(truth_folder, camera: str, frame: int, window: np.ndarray) -> np.ndarray:
    """Whether each crop pixel's source pixel shows the tracked mesh (False on the black padding)."""
    order = json.loads((truth_folder / "meta.json").read_text())["frame_ids"]
    tracked = np.load(truth_folder / f"cam{camera}.npz")["tracked"][order.index(frame)]
    rows, cols = source_pixels(window)
    inside = ((rows >= 0) & (rows < tracked.shape[0]))[:, None] & ((cols >= 0) & (cols < tracked.shape[1]))
    r = np.clip(rows, 0, tracked.shape[0] - 1)[:, None]
    c = np.clip(cols, 0, tracked.shape[1] - 1)[None, :]
    return inside & tracked[r, c]


def test_groundtruth_matches_the_mesh_on_tracked_pixels(
    gt_positions, mesh_positions, synthetic_capture
) -> None:
    """Where both backends are confident and the pixel shows the tracked mesh, positions agree to < 1 mm."""
    gt, mesh = open_store(gt_positions["path"]), open_store(mesh_positions["out"] / "positions.zarr")
    crops = InputCrops(mesh_positions["out"] / "crops.zarr")
    truth_folder = synthetic_capture.groundtruth / mesh_positions["subject"]
    assert (gt["valid"][...] == mesh["valid"][...]).all()
    errors, covered = [], []
    for c, t in np.argwhere(gt["valid"][...]):
        tracked = _tracked_in_crop(truth_folder, crops.camera_ids[c], crops.frames[t], crops.window[c, t])
        gt_conf, mesh_conf = gt["confidence"][c, t] == 1, mesh["confidence"][c, t] == 1
        covered.append(gt_conf[mesh_conf].mean())  # the mesh's pixels are foreground in the ground truth
        sel = gt_conf & mesh_conf & tracked
        diff = gt["position"][c, t][:, sel] - mesh["position"][c, t][:, sel]
        errors.append(np.linalg.norm(diff, axis=0))
    errors = np.concatenate(errors) * 1e3
    print(
        f"groundtruth vs mesh on {errors.size} tracked pixels: median {np.median(errors):.5f} mm, "
        f"99th percentile {np.percentile(errors, 99):.5f} mm, max {errors.max():.5f} mm; "
        f"mesh pixels that are ground-truth foreground: {100 * np.min(covered):.2f}% (worst view)"
    )
    assert errors.size > 1000
    assert errors.max() < 1.0 and np.median(errors) < 0.01
    assert np.min(covered) > 0.99


def test_groundtruth_covers_hair_neck_and_shirt(gt_positions, mesh_positions) -> None:
    gt_cov, mesh_cov = gt_positions["summary"]["mean_coverage"], mesh_positions["summary"]["mean_coverage"]
    print(f"mean foreground fraction: groundtruth {gt_cov:.3f}, mesh {mesh_cov:.3f}")
    assert gt_cov > mesh_cov + 0.05
    gt, mesh = open_store(gt_positions["path"]), open_store(mesh_positions["out"] / "positions.zarr")
    c, t = np.argwhere(gt["valid"][...])[0]
    extra = (gt["confidence"][c, t] == 1) & (mesh["confidence"][c, t] == 0)
    assert extra.sum() > 0.05 * extra.size  # hair, neck and shirt, which the tracked mesh lacks


def test_groundtruth_positions_reproject_to_their_pixel_centres(gt_positions, mesh_positions) -> None:
    gt = open_store(gt_positions["path"])
    crops = InputCrops(mesh_positions["out"] / "crops.zarr")
    worst = 0.0
    for c, t in np.argwhere(gt["valid"][...]):
        conf = gt["confidence"][c, t]
        rows, cols = np.nonzero(conf == 1)
        points = gt["position"][c, t][:, rows, cols].T.astype(np.float64)
        uv, depth = crops.camera(crops.camera_ids[c], crops.frames[t]).project(points)
        assert (depth > 0).all()
        worst = max(worst, float(np.abs(uv - np.stack([cols + 0.5, rows + 0.5], axis=1)).max()))
    print(f"reprojection error of ground-truth positions: max {worst:.2e} px")
    assert worst < 1e-3


def test_store_layout_and_oracle_label(gt_positions, mesh_positions, caplog) -> None:
    gt, mesh = open_store(gt_positions["path"]), open_store(mesh_positions["out"] / "positions.zarr")
    for name in ("position", "confidence", "valid", "camera_ids", "frames"):
        assert gt[name].shape == mesh[name].shape and gt[name].dtype == mesh[name].dtype, name
    assert gt.attrs["oracle"] is True and mesh.attrs["oracle"] is False
    assert gt.attrs["random_weights"] is False
    assert "ORACLE" in gt.attrs["summary"]["backend"]
    conf, pos = gt["confidence"][...], gt["position"][...]
    assert set(np.unique(conf)) <= {0.0, 1.0}
    assert np.all(pos.transpose(0, 1, 3, 4, 2)[conf == 0] == 0)
    assert verify_store(gt_positions["path"]) == []


def test_log_says_oracle(mesh_positions, synthetic_capture, tmp_path, caplog) -> None:
    views = dict(mesh_positions["views"], input_views=mesh_positions["views"]["input_views"][:1])
    with caplog.at_level(logging.INFO, logger="avat3r_core.stages.positions"):
        summary = run_positions(
            mesh_positions["reader"],
            mesh_positions["out"] / "crops.zarr",
            views,
            GROUNDTRUTH,
            tmp_path / "positions.zarr",
            groundtruth=synthetic_capture.groundtruth,
            progress=False,
        )
    assert summary["views"] == 1 and summary["oracle"] is True
    assert "ORACLE" in caplog.text and "synthetic" in caplog.text


def test_missing_groundtruth_file_names_subject_camera_frame_and_file(
    mesh_positions, synthetic_capture, tmp_path
) -> None:
    subject = mesh_positions["subject"]
    folder = tmp_path / "groundtruth" / subject
    shutil.copytree(synthetic_capture.groundtruth / subject, folder)
    camera, frame = mesh_positions["views"]["input_views"][0]
    (folder / f"cam{camera}.npz").unlink()
    out = tmp_path / "positions.zarr"
    args = (
        mesh_positions["reader"],
        mesh_positions["out"] / "crops.zarr",
        mesh_positions["views"],
        GROUNDTRUTH,
    )
    with pytest.raises(CaptureError) as error:
        run_positions(*args, out, groundtruth=tmp_path / "groundtruth", progress=False)
    message = str(error.value)
    assert f"subject {subject}" in message and f"camera {camera}" in message and f"frame {frame}" in message
    assert f"cam{camera}.npz" in message and "synthetic" in message
    assert not out.exists()
    # a real capture: no ground truth for the subject at all
    with pytest.raises(CaptureError, match=rf"subject {subject}, file .*meta\.json: missing synthetic"):
        run_positions(*args, out, groundtruth=tmp_path / "nothing", progress=False)
    with pytest.raises(ConfigError, match=r"positions\.backend"):
        run_positions(*args, out, progress=False)
    assert not out.exists()


def test_cli_takes_the_groundtruth_folder(mesh_positions, synthetic_capture, tmp_path, capsys) -> None:
    views = dict(mesh_positions["views"], input_views=mesh_positions["views"]["input_views"][:1])
    (tmp_path / "views.json").write_text(json.dumps(views))
    config = json.dumps({"capture": synthetic_capture.capture_section(), "positions": GROUNDTRUTH})
    args = ["-q", "positions", "--config", config, "--crops", str(mesh_positions["out"] / "crops.zarr")]
    args += ["--views", str(tmp_path / "views.json"), "--out", str(tmp_path / "positions.zarr")]
    assert main([*args, "--groundtruth", str(synthetic_capture.groundtruth)]) == 0
    assert open_store(tmp_path / "positions.zarr").attrs["oracle"] is True
    shutil.rmtree(tmp_path / "positions.zarr")
    assert main(args) == 1  # no --groundtruth: one line naming the config key
    assert "config key 'positions.backend'" in capsys.readouterr().err


def test_rule_passes_the_groundtruth_folder_only_to_the_groundtruth_backend(tmp_path) -> None:
    path = tiny_config(tmp_path)
    for backend in ("groundtruth", "mesh"):
        config = yaml.safe_load(path.read_text())
        config["positions"]["backend"] = backend
        path.write_text(yaml.safe_dump(config))
        result = run_snakemake(tmp_path, "--configfile", str(path), "-n", "-p")
        commands = [line for line in result.stdout.splitlines() if "avat3r positions" in line]
        assert len(commands) == 2
        expected = f"--groundtruth {config['synthetic']['groundtruth']} --out"
        assert all((expected in line) == (backend == "groundtruth") for line in commands), commands


def test_resampled_and_padded_windows() -> None:
    """A window resampled 80 -> 32 px and half outside the image: nearest source pixels, padding at 0."""
    height, width = 100, 90
    image = Camera(
        K=np.array([[100.0, 0, 45.0], [0, 100.0, 50.0], [0, 0, 1]]), w2c=np.eye(4), width=width, height=height
    )
    window = np.array([-40, 10, 80, 32])
    crop = image.crop_and_resize(-40, 10, 80, 80, 32, 32)
    rows, cols = source_pixels(window)
    # source index = x0 + floor((u + 0.5) * 2.5)
    assert rows[0] == 11 and cols[0] == -39 and rows[-1] == 88 and cols[-1] == 38
    # every crop pixel centre lies inside its source pixel, through the cameras' own K
    centres = (np.arange(32) + 0.5 - crop.K[0, 2]) / crop.K[0, 0] * image.K[0, 0] + image.K[0, 2]
    assert ((cols <= centres) & (centres < cols + 1)).all()
    # a tilted plane z = 1 + 0.002 * column: depth differs from pixel to pixel, so averaging would show
    depth = np.broadcast_to(1.0 + 0.002 * np.arange(width, dtype=np.float32), (height, width)).copy()
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[:, 60:] = 0
    points, conf = groundtruth_position_map(depth, alpha, crop.K, crop.w2c, window)
    inside_cols = (cols >= 0) & (cols < 60)
    assert (conf[:, inside_cols] == 1).all() and (conf[:, ~inside_cols] == 0).all()
    assert (points[:, ~inside_cols] == 0).all()
    z = points[..., 2][:, inside_cols]
    np.testing.assert_allclose(z, np.broadcast_to(depth[0, cols[inside_cols]], z.shape), rtol=1e-6)
    uv, _ = crop.project(points[:, inside_cols].reshape(-1, 3))
    v, u = np.mgrid[0:32, 0:32]
    expected = np.stack([u[:, inside_cols] + 0.5, v[:, inside_cols] + 0.5], axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(uv, expected, atol=1e-4)

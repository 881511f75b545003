"""Held-out evaluation and its baselines on the tiny shard fixture (mesh position maps, 64 px crops)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from avat3r_core.metrics.image import psnr
from avat3r_core.recon.baselines import camera_mean_images, nearest_input_view, view_splats
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.evaluate import METHODS, evaluate_heldout
from avat3r_core.recon.train import run_training
from avat3r_core.render import render
from tests.test_train import config


def _batch(sample: dict) -> dict:
    return {k: v[None] if isinstance(v, torch.Tensor) else [v] for k, v in sample.items()}


def test_view_splats_reproject_onto_their_own_crop(shard_index) -> None:
    """Position maps, crop cameras and renderer agree: an input view's splats re-render its own pixels."""
    batch = _batch(Avat3rShardDataset(shard_index, n_supervision=2, seed=1)[0])
    size = batch["input_rgb"].shape[-1]
    keep = batch["confidence"][0, :, 0] >= 0.5
    scores = []
    for v in range(batch["input_rgb"].shape[1]):
        scene = view_splats(batch, 0, [v])
        for camera in (v, (v + 1) % batch["input_rgb"].shape[1]):
            out = render(
                scene,
                batch["input_K"][0, camera : camera + 1],
                batch["input_w2c"][0, camera : camera + 1],
                size,
                size,
            )
            mask = keep[v][None, None].expand(1, 3, size, size).float()
            scores.append(float(psnr(out.rgb, batch["input_rgb"][0, v : v + 1], mask=mask)))
    own, other = scores[0::2], scores[1::2]
    assert min(own) > 25.0, own  # own camera: the splats land on the pixels they came from
    assert max(other) < min(own) - 8.0, (own, other)  # control: another camera's viewpoint does not


def test_nearest_input_view_is_the_closest_direction() -> None:
    def w2c_at(center: list[float]) -> torch.Tensor:
        m = torch.eye(4)
        m[:3, 3] = -torch.tensor(center)  # identity rotation: centre = -t
        return m

    batch = {
        "input_w2c": torch.stack([w2c_at([1, 0, 0]), w2c_at([0, 1, 0]), w2c_at([0, 0, 1])])[None],
        "target_w2c": torch.stack([w2c_at([0.1, 0.9, 0.2]), w2c_at([0.2, 0.1, 3.0])])[None],
    }
    assert [nearest_input_view(batch, 0, j) for j in range(2)] == [1, 2]


def test_mean_images_average_each_camera_over_its_valid_timesteps(shard_index) -> None:
    dataset = Avat3rShardDataset(shard_index, n_supervision=2)
    means = camera_mean_images(dataset)
    subject = dataset.subjects[0]
    rgb = dataset._group(subject, "crops")["supervision/rgb"]
    c = 1
    valid = np.flatnonzero(subject.supervision_valid[c])
    expected = np.mean([rgb[c, t].astype(np.float64) / 255 for t in valid], axis=0)
    np.testing.assert_allclose(means[subject.supervision_cameras[c]], expected, atol=1e-6)


def test_evaluate_writes_metrics_for_model_and_baselines_and_a_grid(shard_index, tmp_path) -> None:
    model = run_training(config(steps=1), shard_index, tmp_path / "run", progress=False)
    summary = evaluate_heldout(
        model, shard_index, tmp_path / "eval", split="train", max_items=2, progress=False
    )
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["methods"] == summary["methods"] and set(saved["methods"]) == set(METHODS)
    assert saved["items"] == 2 and saved["views_scored"] > 2
    assert all(np.isfinite(v["psnr"]) and 0 < v["ssim"] <= 1 for v in saved["methods"].values())
    best = max((m for m in METHODS if m != "model"), key=lambda m: saved["methods"][m]["psnr"])
    assert saved["best_baseline"] == best
    gain = saved["methods"]["model"]["psnr"] - saved["methods"][best]["psnr"]
    assert abs(saved["psnr_gain_over_best_baseline"] - gain) < 1e-9
    grid = np.asarray(Image.open(tmp_path / "eval" / "grid.png"))
    assert grid.shape[0] == len(saved["grid_rows"]) * 83 and grid.shape[2] == 3

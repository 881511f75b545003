"""Held-out evaluation on a protocol, its baselines, tables, grid and page, and the gather of variants (tiny
shard fixture: mesh position maps, 64 px input and 83 px supervision crops)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from avat3r_core.errors import Avat3rError, ConfigError
from avat3r_core.metrics.image import psnr
from avat3r_core.metrics.lpips import LPIPSWeightsError
from avat3r_core.recon.baselines import camera_mean_images, nearest_input_view, view_splats
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.evaluate import METHODS, EvaluationError, evaluate_heldout, score_views
from avat3r_core.recon.gather import gather
from avat3r_core.recon.protocol import build_protocol, write_protocol
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


@pytest.fixture(scope="module")
def evaluated(shard_index, tmp_path_factory) -> dict:
    """A 1-step model scored on a small protocol (1 reconstruction and 2 animation frames, 3 cameras each)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    model = run_training(config(steps=1), shard_index, tmp / "run", progress=False)
    settings = {"reconstruction_frames": 1, "animation_frames": 2, "target_cameras": 3}
    protocol = build_protocol(shard_index, dataset="tiny", seed=0, split="train", settings=settings)
    path = write_protocol(protocol, tmp / "protocol.json")
    summary = evaluate_heldout(model, shard_index, tmp / "eval", protocol=path, progress=False)
    return {"model": model, "protocol": protocol, "summary": summary, "out": tmp / "eval"}


def test_evaluate_scores_each_split_method_and_subject(evaluated) -> None:
    out, summary = evaluated["out"], evaluated["summary"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["positions"] == "stored" and saved["size"] == [83, 83] and saved["items"] == 3
    assert saved["protocol"]["dataset"] == "tiny" and saved["protocol"]["version"] == 1
    assert set(saved["results"]) == {"reconstruction", "animation", "all"}
    results = saved["results"]
    for split, views in (("reconstruction", 3), ("animation", 6), ("all", 9)):
        assert set(results[split]) == set(METHODS)
        for method in METHODS:
            entry = results[split][method]
            assert entry["views"] == views
            mean = entry["mean"]
            assert np.isfinite(mean["psnr"]) and 0 < mean["ssim"] <= 1 and mean["jod"] <= 10
            # Not configured: null with a reason, never 0.
            assert mean["lpips"] is None and mean["akd"] is None and mean["csim"] is None
            (subject,) = entry["subjects"]
            assert entry["subjects"][subject]["mean"] == mean  # one subject: its mean is the mean
    for metric in ("lpips", "akd", "csim"):
        assert not saved["metrics"][metric]["available"]
        assert saved["metrics"][metric]["reason"].startswith("unavailable: not configured")
    assert saved["metrics"]["jod"]["metric"] == "cvvdp" and saved["metrics"]["jod"]["fps"] == 7.5
    # The "all" mean pools the views of both splits.
    for method in METHODS:
        pooled = (
            3 * results["reconstruction"][method]["mean"]["psnr"]
            + 6 * results["animation"][method]["mean"]["psnr"]
        ) / 9
        assert abs(results["all"][method]["mean"]["psnr"] - pooled) < 1e-9
    assert saved["methods"]["model"] == results["all"]["model"]["mean"]
    best = max((m for m in METHODS if m != "model"), key=lambda m: saved["methods"][m]["psnr"])
    assert saved["best_baseline"] == best
    gain = saved["methods"]["model"]["psnr"] - saved["methods"][best]["psnr"]
    assert abs(saved["psnr_gain_over_best_baseline"] - gain) < 1e-9


def test_csv_holds_the_json_numbers(evaluated) -> None:
    out = evaluated["out"]
    saved = json.loads((out / "metrics.json").read_text())
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * len(METHODS) * 2  # splits x methods x (mean + one subject)
    for row in rows:
        entry = saved["results"][row["split"]][row["method"]]
        if row["subject"] != "mean":
            entry = entry["subjects"][row["subject"]]
        assert int(row["views"]) == entry["views"]
        for metric, value in entry["mean"].items():
            assert row[metric] == "" if value is None else float(row[metric]) == value


def test_grid_and_html_summary(evaluated) -> None:
    out = evaluated["out"]
    saved = json.loads((out / "metrics.json").read_text())
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape[0] == len(saved["grid_rows"]) * 83 and grid.shape[2] == 3
    assert grid.shape[1] == 2 * 4 * 83 + 4  # a reconstruction and an animation panel of 4 columns, a gap
    page = (out / "summary.html").read_text()
    assert "<table>" in page and "<h2>reconstruction</h2>" in page and "<h2>animation</h2>" in page
    assert f"{saved['methods']['model']['psnr']:.2f}" in page
    assert "JOD ↑ (cvvdp)" in page and "n/a" in page
    encoded = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert encoded is not None
    embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded.group(1)))))
    assert np.array_equal(embedded, grid)


def test_jod_off_is_unavailable_and_max_items_caps(evaluated, shard_index, tmp_path) -> None:
    summary = evaluate_heldout(
        evaluated["model"],
        shard_index,
        tmp_path,
        protocol=evaluated["protocol"],
        metrics={"jod": None},
        max_items=1,
        progress=False,
    )
    assert summary["items"] == 1 and summary["metrics"]["jod"]["available"] is False
    assert "evaluate.metrics.jod is null" in summary["metrics"]["jod"]["reason"]
    assert summary["results"]["all"]["model"]["mean"]["jod"] is None


def test_evaluate_builds_a_protocol_when_given_none(evaluated, shard_index, tmp_path) -> None:
    settings = {"reconstruction_frames": 1, "animation_frames": 0, "target_cameras": 1}
    protocol = build_protocol(shard_index, dataset="x", split="train", settings=settings)
    summary = evaluate_heldout(
        evaluated["model"],
        shard_index,
        tmp_path,
        split="train",
        max_items=1,
        metrics={"jod": None},
        progress=False,
    )
    assert (tmp_path / "protocol.json").is_file() and summary["protocol"]["path"] == str(
        tmp_path / "protocol.json"
    )
    assert (
        summary["results"]["reconstruction"]["model"]["views"]
        + summary["results"]["animation"]["model"]["views"]
        == summary["views_scored"]
    )
    assert protocol["avatars"][0]["targets"][0]["split"] == "reconstruction"


def test_bad_inputs_give_clear_errors(evaluated, shard_index, tmp_path) -> None:
    with pytest.raises(
        EvaluationError, match=r"renders \(2, 3, 83, 83\) and targets \(2, 3, 64, 64\) differ"
    ):
        score_views(torch.rand(2, 3, 83, 83), torch.rand(2, 3, 64, 64))
    bad = tmp_path / "alexnet.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(LPIPSWeightsError, match=r"alexnet\.pth"):
        evaluate_heldout(
            evaluated["model"],
            shard_index,
            tmp_path,
            protocol=evaluated["protocol"],
            metrics={"lpips_alexnet": str(bad)},
            progress=False,
        )
    with pytest.raises(ConfigError, match=r"positions\.dust3r\.checkpoint"):
        evaluate_heldout(
            evaluated["model"],
            shard_index,
            tmp_path,
            protocol=evaluated["protocol"],
            positions="joint",
            positions_cfg={"dust3r": {"checkpoint": None}},
            progress=False,
        )


def _fake_metrics(psnr: float, lpips: float | None) -> dict:
    mean = {"psnr": psnr, "ssim": 0.5, "lpips": lpips, "jod": None, "akd": None, "csim": None}
    entry = {"mean": mean, "views": 4, "clips": 0, "subjects": {"S1": {"mean": mean, "views": 4, "clips": 0}}}
    return {
        "positions": "stored",
        "protocol": {"sha256": "abc"},
        "metrics": {},
        "results": {
            split: {method: entry for method in METHODS} for split in ("reconstruction", "animation", "all")
        },
    }


def test_gather_tables_every_variant(tmp_path) -> None:
    paths = []
    for variant, value, lpips in (("base", 25.0, 0.2), ("no_skips", 21.5, None)):
        path = tmp_path / variant / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(_fake_metrics(value, lpips)))
        paths.append(path)
    summary = gather(paths, tmp_path / "out")
    assert summary["variants"] == ["base", "no_skips"] and summary["same_protocol"]
    with open(tmp_path / "out" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * len(METHODS)
    model_all = {r["variant"]: r for r in rows if r["method"] == "model" and r["split"] == "all"}
    assert float(model_all["base"]["psnr"]) == 25.0 and float(model_all["no_skips"]["psnr"]) == 21.5
    assert float(model_all["base"]["lpips"]) == 0.2 and model_all["no_skips"]["lpips"] == ""
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["rows"] == summary["rows"] and len(saved["rows"]) == len(rows)
    picture = Image.open(tmp_path / "out" / "summary.png")
    assert picture.width > 300 and picture.height > 200
    old = tmp_path / "old" / "metrics.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"methods": {}}))
    with pytest.raises(Avat3rError, match=r"variant old: metrics\.json has no per-split results"):
        gather([old], tmp_path / "out2")


def test_joint_positions_run_dust3r_on_the_avatar_inputs(
    evaluated, shard_index, tmp_path, monkeypatch
) -> None:
    """evaluate.positions joint: DUSt3R (a tiny random one) on the 4 actual inputs; the mode is recorded."""
    from avat3r_core.models.dust3r.checkpoint import write_random_dust3r
    from avat3r_core.recon import evaluate as module

    checkpoint = write_random_dust3r(tmp_path / "tiny.pth")
    cfg = {
        "dust3r": {
            "checkpoint": str(checkpoint),
            "window": "portrait",
            "resolution": 64,
            "batch_size": 12,
            "iterations": 5,
            "lr": 0.01,
            "device": "cpu",
        }
    }
    calls = []
    original = module.JointPositions.__call__

    def spy(self, avatar, sample):
        before = sample["position"].clone()
        original(self, avatar, sample)
        calls.append(
            (avatar, before.shape == sample["position"].shape, torch.equal(before, sample["position"]))
        )

    protocol = dict(evaluated["protocol"], avatars=evaluated["protocol"]["avatars"][:1])
    monkeypatch.setattr(module.JointPositions, "__call__", spy)
    summary = evaluate_heldout(
        evaluated["model"],
        shard_index,
        tmp_path / "eval",
        protocol=protocol,
        positions="joint",
        positions_cfg=cfg,
        metrics={"jod": None},
        max_items=2,
        progress=False,
    )
    assert summary["positions"] == "joint" and summary["items"] == 2
    assert len(calls) == 2 and all(same_shape and not unchanged for _, same_shape, unchanged in calls)
    assert np.isfinite(summary["results"]["all"]["model"]["mean"]["psnr"])

"""The paper's out-of-domain protocol through the DAG: a model trained on the (synthetic) Ava-256 capture with
FLAME codes, scored on a (synthetic) NeRSemble capture that trains nothing; and the checks that stop a
model from being scored on data it cannot read (recon/compat.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from avat3r_core.cli import main
from avat3r_core.config import REPO_ROOT
from tests.test_workflow import TINY, run_snakemake


def merged(*overlays: dict) -> dict:
    """config.yaml with the overlays applied key by key, as Snakemake merges --configfile files."""

    def merge(into: dict, update: dict) -> dict:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    for overlay in overlays:
        merge(config, overlay)
    return config


def shipped(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / name).read_text())


SMALL = {
    "synthetic": dict(TINY),
    "train": {"steps": 2, "n_supervision": 2, "num_workers": 0},
    "frames": {"input_count": 1},
    "evaluate": {"protocol": {"reconstruction_frames": 1, "animation_frames": 1, "target_cameras": 2}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train on Ava-256 layout with FLAME codes (configs/flame_codes.yaml), then score that model on the
    NeRSemble layout (configs/nersemble.yaml), each a real Snakemake run in its own folder."""
    ava = tmp_path_factory.mktemp("ava256")
    config = merged(shipped("flame_codes.yaml"), SMALL)
    config["variants"] = {"base": {}}
    (ava / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(
        ava, "--configfile", str(ava / "config.yaml"), "--cores", "2", "results/train/base/model.pt"
    )

    nersemble = tmp_path_factory.mktemp("nersemble")
    overlay = shipped("nersemble.yaml")
    overlay["evaluate"]["models"] = {"ava256_flame": str(ava / "results" / "train" / "base" / "model.pt")}
    config = merged(overlay, SMALL, {"synthetic": {"n_subjects": 1}})
    (nersemble / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(nersemble, "--configfile", str(nersemble / "config.yaml"), "--cores", "2")
    return ava, nersemble


def test_model_trained_on_one_capture_is_scored_on_another(runs):
    _, nersemble = runs
    results = nersemble / "results_nersemble"
    assert not (results / "train").exists()  # an evaluation-only capture trains nothing
    index = json.loads((results / "dataset_index.json").read_text())
    assert index["evaluation_only"] and index["dataset"] == "synthetic_nersemble"
    assert {entry["split"] for entry in index["subjects"].values()} == {"test"}

    metrics = json.loads((results / "evaluate" / "ava256_flame" / "metrics.json").read_text())
    assert metrics["cross_dataset"] is True
    assert metrics["trained_on"]["dataset"] == "synthetic"
    assert metrics["trained_on"]["expression_source"] == "flame_gagavatar"
    assert metrics["scored_on"]["dataset"] == "synthetic_nersemble"
    assert metrics["scored_on"]["expression_source"] == "flame_gagavatar"  # the paper's: the same tracker
    # same seed and features config: the same tiny Sapiens made both runs' features
    assert metrics["scored_on"]["features_fingerprint"] == metrics["trained_on"]["features_fingerprint"]
    assert metrics["compatibility_notes"] == []
    assert metrics["mean_image_from"].startswith("test split")
    assert metrics["protocol"]["dataset"] == "synthetic_nersemble" and metrics["views_scored"] > 0
    psnr = metrics["methods"]["model"]["psnr"]
    assert psnr is not None and 5.0 < psnr < 60.0
    summary = json.loads((results / "evaluate" / "summary.json").read_text())
    assert "ava256_flame" in json.dumps(summary)
    assert "Cross-dataset" in (results / "evaluate" / "ava256_flame" / "summary.html").read_text()


def _altered_model(model: Path, out: Path, **data: object) -> Path:
    state = torch.load(model, map_location="cpu", weights_only=True)
    state["config"]["data"].update(data)
    torch.save(state, out)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features_fingerprint": "0123456789abcdef@256x256"}, "another extractor"),
        ({"expression_source": "ava256"}, "Ava-256 latent codes, the data has FLAME codes"),
        ({"expression_dim": 256}, "256-d expression codes, the data has 109-d"),
    ],
)
def test_a_model_that_cannot_read_the_data_is_refused(runs, tmp_path, capsys, change, message):
    ava, nersemble = runs
    results = nersemble / "results_nersemble"
    model = _altered_model(ava / "results" / "train" / "base" / "model.pt", tmp_path / "model.pt", **change)
    code = main(
        [
            "-q",
            "evaluate",
            "--config",
            json.dumps({"train": {}, "evaluate": {"metrics": {"jod": None}}}),
            "--model",
            str(model),
            "--index",
            str(results / "dataset_index.json"),
            "--protocol",
            str(results / "evaluate" / "protocol.json"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert message in error and "synthetic_nersemble" in error
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_training_refuses_an_evaluation_only_index(runs, tmp_path, capsys):
    _, nersemble = runs
    index = nersemble / "results_nersemble" / "dataset_index.json"
    config = {
        "model": {"expression_dim": 109},
        "train": {
            "steps": 1,
            "num_workers": 0,
            "mix": [{"index": str(index), "split": "test", "weight": 1.0}],
        },
    }
    ava_index = runs[0] / "results" / "dataset_index.json"
    code = main(
        ["-q", "train", "--config", json.dumps(config), "--index", str(ava_index), "--out", str(tmp_path)]
    )
    assert code == 1
    assert "evaluation-only capture" in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()

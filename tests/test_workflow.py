"""The DAG itself: lint, dry run and a real end-to-end run of the Snakefile on a tiny synthetic capture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avat3r_core.capture.synthetic import SyntheticConfig, synthetic_subject_ids
from avat3r_core.config import REPO_ROOT
from avat3r_core.store.manifest import verify_store

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = {
    "n_subjects": 2,
    "n_cameras": 6,
    "frames_per_segment": 2,
    "downsample": 32,
    "min_missing": 2,
    "seed": 3,
}


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def tiny_config(workdir: Path) -> Path:
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["synthetic"].update(TINY)
    config["train"].update(steps=2, n_supervision=2, num_workers=0)
    for overrides in config["variants"].values():  # the demo's cheaper variants set their own step counts
        if "train.steps" in overrides:
            overrides["train.steps"] = 2
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lint_is_clean() -> None:
    result = subprocess.run(
        [*SNAKEMAKE, "--lint"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_dry_run_plans_one_index_per_subject(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", "--quiet", "rules")
    subjects = synthetic_subject_ids(SyntheticConfig(**TINY))
    assert len(subjects) == 2
    table = dict(
        line.split()[:2]
        for line in result.stdout.splitlines()
        if line.split()[:1] != ["job"] and len(line.split()) == 2
    )
    assert table.get("capture_index") == "2"
    assert table.get("frames") == "2"
    assert table.get("crop") == "2" and table.get("matting") == "2" and table.get("views") == "2"
    assert table.get("positions") == "2" and table.get("features") == "2"
    assert table.get("shards") == "2" and table.get("dataset_index") == "1"
    assert table.get("synthetic_capture") == "1"
    variants = len(yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["variants"])
    assert variants == 2  # the demo's two variants: base and no_skips
    assert table.get("train") == str(variants) and table.get("evaluate") == str(variants)
    assert table.get("protocol") == "1" and table.get("gather") == "1"
    # The report's pictures: one job per subject, one per variant and the figure index.
    assert table.get("report_subject") == "2" and table.get("report_training") == str(variants)
    assert table.get("report_figures") == "1"


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["synthetic"]["n_cameras"] = "many"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "--configfile", str(path), "-n", check=False)
    assert result.returncode != 0
    assert "config key 'synthetic.n_cameras': expected integer, got 'many'" in result.stdout + result.stderr


@pytest.mark.slow
def test_end_to_end_builds_capture_indexes(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    subjects = synthetic_subject_ids(SyntheticConfig(**TINY))
    for subject in subjects:
        index = json.loads((tmp_path / "results" / subject / "capture_index.json").read_text())
        assert index["subject"] == subject
        assert len(index["cameras"]) == TINY["n_cameras"]
        assert len(index["frames"]) == 5 * TINY["frames_per_segment"]
        assert len(index["missing_images"]) >= TINY["min_missing"]
        log = (tmp_path / "results" / "logs" / "capture_index" / f"{subject}.log").read_text()
        assert f"subject {subject}: {TINY['n_cameras']} cameras" in log
        assert (tmp_path / "results" / "benchmarks" / "capture_index" / f"{subject}.tsv").exists()
        frames = json.loads((tmp_path / "results" / subject / "frames.json").read_text())
        assert len(frames["input"]) == 3 * TINY["frames_per_segment"]  # input_count 10 > frames per segment
        assert "input timesteps" in (tmp_path / "results" / "logs" / "frames" / f"{subject}.log").read_text()
        matting_log = (tmp_path / "results" / "logs" / "matting" / f"{subject}.log").read_text()
        assert "IoU vs ground truth mean 0.9" in matting_log
        assert verify_store(tmp_path / "results" / subject / "crops.zarr") == []
        assert verify_store(tmp_path / "results" / subject / "positions.zarr") == []
        features_log = (tmp_path / "results" / "logs" / "features" / f"{subject}.log").read_text()
        assert "RANDOM WEIGHTS" in features_log
    index = json.loads((tmp_path / "results" / "dataset_index.json").read_text())
    assert index["counts"] == {"train": 1, "validation": 0, "test": 1}
    assert all(entry["random_weights"] for entry in index["subjects"].values())
    metrics = json.loads((tmp_path / "results" / "evaluate" / "base" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["views_scored"] > 0
    assert set(metrics["results"]) == {"reconstruction", "animation", "all"}
    gathered = (tmp_path / "results" / "evaluate" / "summary.csv").read_text()
    assert "no_skips" in gathered and "base" in gathered
    figures = json.loads((tmp_path / "results" / "report" / "figures.json").read_text())
    variants = len(yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["variants"])
    assert len(figures["figures"]) == 3 * len(subjects) + 3 * variants + 3  # + gather's csv, json, png
    assert "step 2" in (tmp_path / "results" / "logs" / "train" / "base.log").read_text()
    # A second run finds nothing to do: outputs, params and code are unchanged.
    again = run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

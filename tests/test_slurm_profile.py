"""The SLURM profile (workflow/profiles/slurm): parsed by Snakemake, and a dry run with the SLURM executor.

`snakemake -n --executor slurm` needs no cluster (no sbatch, no squeue): it builds the DAG and prints each
job's resolved resources, which is what the profile decides. The profile turns on --use-conda; where conda
is not installed (as here and in CI) the dry run uses a copy of the profile without that key, because
Snakemake calls conda while it builds the DAG of jobs that name an environment.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from avat3r_core.config import REPO_ROOT
from tests.test_workflow import run_snakemake, tiny_config

PROFILE = REPO_ROOT / "workflow" / "profiles" / "slurm"
GPU_RULES = {"positions", "features", "train", "evaluate"}


def profile() -> dict:
    return yaml.safe_load((PROFILE / "profile.yaml").read_text())


def test_snakemake_reads_the_profile(tmp_path: Path) -> None:
    """Every key is a flag this Snakemake (with the SLURM plugin) knows, with the intended values."""
    from snakemake.cli import parse_args

    _, args = parse_args(["--snakefile", str(REPO_ROOT / "Snakefile"), "--workflow-profile", str(PROFILE)])
    assert args.executor == "slurm"
    assert args.use_conda
    assert args.jobs == 100 and args.latency_wait == 60
    # Training is resubmitted until it completes (each job resumes from the last checkpoint); other rules
    # once. `preemptible-*` is Snakemake's only per-rule retry count outside the Snakefile.
    assert args.retries == 1
    assert args.preemptible_rules == {"train"} and args.preemptible_retries >= 10
    assert set(args.set_resources) <= set(profile()["set-resources"])


def test_profile_slurm_extra_passes_the_plugin_checks() -> None:
    """slurm_extra may not repeat what the plugin sets itself (--gres, --gpus, -t, --mem, ...)."""
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    for rule, resources in profile()["set-resources"].items():
        if "slurm_extra" in resources:
            value = yaml.safe_load(resources["slurm_extra"])  # the profile quotes it for Snakemake's parser
            validate_slurm_extra(SimpleNamespace(resources=SimpleNamespace(slurm_extra=value)))
            assert "--signal=" in value and "--requeue" in value, rule


def dry_run_resources(workdir: Path, config_overrides: dict) -> dict[str, dict[str, str]]:
    config_path = tiny_config(workdir)
    config = yaml.safe_load(config_path.read_text())
    for section, values in config_overrides.items():
        config[section].update(values)
    config_path.write_text(yaml.safe_dump(config))
    settings = profile()
    if shutil.which("conda") is None:
        assert settings.pop("use-conda") is True
    copy = workdir / "profile"
    copy.mkdir()
    (copy / "profile.yaml").write_text(yaml.safe_dump(settings))
    result = run_snakemake(workdir, "--configfile", str(config_path), "--workflow-profile", str(copy), "-n")
    resources: dict[str, dict[str, str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif rule and (match := re.match(r"^\s+resources: (.*)$", line)):
            # values may contain ", " only inside slurm_extra, which comes last
            head, _, extra = match.group(1).partition("slurm_extra=")
            values = dict(item.split("=", 1) for item in head.rstrip(", ").split(", ") if "=" in item)
            if extra:
                values["slurm_extra"] = extra
            resources[rule] = values
    assert "This was a dry-run" in result.stdout, result.stdout[-2000:]
    return resources


def test_dry_run_with_the_slurm_executor(tmp_path: Path) -> None:
    resources = dry_run_resources(tmp_path, {"train": {"gpus": 2}, "positions": {"backend": "dust3r"}})
    expected_rules = {
        "synthetic_capture",
        "capture_index",
        "frames",
        "views",
        "matting",
        "crop",
        "positions",
        "features",
        "shards",
        "dataset_index",
        "train",
        "evaluate",
    }
    assert expected_rules <= set(resources)
    for rule in expected_rules:
        job = resources[rule]
        assert job["slurm_account"] and int(job["runtime"]) > 0 and int(job["mem_mb"]) > 0, (rule, job)
        assert job["slurm_partition"] == ("gpu" if rule in GPU_RULES else "cpu"), (rule, job)
    train = resources["train"]
    assert train["gpu"] == "2", train  # from train.gpus, not overridden by the profile
    assert int(train["runtime"]) == 24 * 60 and int(train["cpus_per_gpu"]) > 0
    assert "--signal=" in train["slurm_extra"] and "--requeue" in train["slurm_extra"]
    assert resources["evaluate"]["gpu"] == "1"
    assert resources["positions"]["gpu"] == "1"  # the dust3r backend
    assert resources["matting"].get("gpu", "0") == "0"  # plate_difference: no GPU


@pytest.mark.skipif(shutil.which("conda") is None, reason="conda is not installed")
def test_conda_environments_resolve_under_the_profile(tmp_path: Path) -> None:
    """Where conda exists: the profile as it is (with --use-conda) dry-runs, environments included."""
    config_path = tiny_config(tmp_path)
    result = run_snakemake(
        tmp_path, "--configfile", str(config_path), "--workflow-profile", str(PROFILE), "-n"
    )
    assert "This was a dry-run" in result.stdout

"""`avat3r plan`: job counts, bytes and GPU hours per stage, checked by hand for an Ava-256-sized config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from avat3r_core.cli import main
from avat3r_core.config import REPO_ROOT, load_config
from avat3r_core.plan import (
    CaptureSize,
    capture_size,
    format_plan,
    plan,
    plan_for_config,
    sapiens_flops,
)

PAPER = {
    "crop.input_size": 512,
    "crop.supervision_size": 667,
    "features.input_size": 1024,
    "features.checkpoint": "sapiens_2b_epoch_660_clean.pth",
    "synthetic.enabled": False,
}


def test_ava256_sized_plan_by_hand() -> None:
    config = load_config(REPO_ROOT / "config.yaml", PAPER)
    size = CaptureSize(subjects=256, cameras=80, frames=5000, height=1024, width=667, front_facing=0.5)
    result = plan(config, size)
    assert result["input_views_per_subject"] == 40 * 30
    assert result["supervision_views_per_subject"] == 80 * 1250
    assert result["bytes_per_subject"]["features"] == 1200 * 64 * 64 * 1920 * 2  # 18.9 GB
    assert result["bytes_per_subject"]["positions"] == 1200 * 512 * 512 * 16
    assert result["jobs"]["features"] == 256 and result["jobs"]["dataset_index"] == 1
    assert "synthetic_capture" not in result["jobs"]
    # + train and evaluate per variant, the evaluation protocol and the gathered summary
    assert sum(result["jobs"].values()) == 8 * 256 + 1 + 2 * len(config["variants"]) + 2


def test_plan_command_prints_the_totals(capsys) -> None:
    assert main(["plan", "--subjects", "2", "--cameras", "8", "--frames", "40"]) == 0
    out = capsys.readouterr().out
    assert "capture: 2 subjects x 8 cameras x 40 frames" in out and "features" in out and "in total" in out


# -- GPU hours ----------------------------------------------------------------------------------------------

PAPER_GPU = {
    **PAPER,
    "matting.backend": "bgmv2",
    "positions.backend": "dust3r",
    "train.steps": 3_500_000,
    "train.gpus": 8,
}
AVA256 = CaptureSize(subjects=256, cameras=80, frames=5000, height=1024, width=667, front_facing=0.5)


def test_gpu_hours_of_the_paper_config_at_ava256_size_by_hand() -> None:
    config = load_config(REPO_ROOT / "config.yaml", PAPER_GPU)
    config["variants"] = {"base": {}}
    hours = plan(config, AVA256)["gpu_hours"]
    views = 256 * 1200  # input views: DUSt3R and Sapiens run once on each
    images = 256 * (1200 + 80 * 1250)  # matting: input views and every supervision view
    assert hours["matting"] == pytest.approx(images / 60 / 3600)  # 1024x667 < HD: 60 images/s
    assert hours["dust3r_pairs"] == pytest.approx(views * 12 * 0.198 / 3600)
    assert hours["dust3r_alignment"] == pytest.approx(views * (12.3 - 12 * 0.198) / 3600)
    tokens = 64 * 64 + 1
    flops = 2 * 48 * (12 * tokens * 1920**2 + 2 * tokens**2 * 1920)
    assert hours["sapiens"] == pytest.approx(views * flops / (0.4 * 312e12) / 3600)
    assert hours["train"] == pytest.approx(8 * 4 * 24)  # the paper's own 8 A100s x 4 days
    assert 1900 < sum(hours.values()) < 2000


def test_sapiens_flops_agree_with_the_model_card() -> None:
    # The card's 8.709 TFLOPs (sapiens_2b, 1024^2) counts the projections and MLP as multiply-adds.
    linear_macs = 48 * 12 * (64 * 64 + 1) * 1920**2
    assert linear_macs == pytest.approx(8.709e12, rel=2e-3)
    assert sapiens_flops(1920, 48, 1024) == pytest.approx(2 * linear_macs + 2 * 48 * 2 * 4097**2 * 1920)


def test_plan_imports_no_pytorch() -> None:
    # The Snakefile prints the plan at start-up: Snakemake's process (and the preprocess env) has no torch.
    code = "import sys, avat3r_core.plan; assert 'torch' not in sys.modules, 'plan imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_backends_cost_no_gpu_hours() -> None:
    config = load_config(REPO_ROOT / "config.yaml")  # plate_difference, groundtruth, tiny features
    result = plan(config, AVA256)
    assert {k: v for k, v in result["gpu_hours"].items() if k != "train"} == {
        "matting": 0.0,
        "dust3r_pairs": 0.0,
        "dust3r_alignment": 0.0,
        "sapiens": 0.0,
    }
    assert "CPU" in result["gpu_notes"]["matting"]
    text = format_plan(result, AVA256)
    assert "  matting                   -  backend plate_difference: CPU" in text


def test_plan_command_prints_gpu_hours_with_their_sources(capsys) -> None:
    args = ["plan", "--subjects", "256"] + [f"--set={k}={v}" for k, v in PAPER_GPU.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    section = out[out.index("GPU hours") :]
    for stage, source in (
        ("matting", "BGMv2 paper (CVPR 2021): 60 fps at HD, RTX 2080 Ti"),
        ("dust3r_pairs", "A40"),
        ("dust3r_alignment", "RTX 3090"),
        ("sapiens", "A100"),
        ("train", "8 A100s"),
    ):
        line = next(line for line in section.splitlines() if line.strip().startswith(stage))
        assert source in line and " h " in line, line


def test_plan_reads_the_size_of_a_real_capture(tmp_path, capsys) -> None:
    from tests.test_dryrun_scale import write_capture_skeleton

    write_capture_skeleton(tmp_path / "capture", subjects=3, cameras=5, frames=40)
    overrides = {"synthetic.enabled": False, "capture.root": str(tmp_path / "capture")}
    size, source = capture_size(load_config(REPO_ROOT / "config.yaml", overrides))
    assert (size.subjects, size.cameras, size.frames, size.height, size.width) == (3, 5, 40, 1024, 667)
    assert "no image found, 1024x667 assumed" in source
    assert main(["plan"] + [f"--set={k}={v}" for k, v in overrides.items()]) == 0
    assert "capture: 3 subjects x 5 cameras x 40 frames" in capsys.readouterr().out
    text = plan_for_config(
        load_config(REPO_ROOT / "config.yaml", {**overrides, "capture.root": "/nonexistent"})
    )
    assert text.startswith("avat3r plan: not available for this capture")

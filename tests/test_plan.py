"""`avat3r plan`: job counts and bytes per stage, checked by hand for an Ava-256-sized config."""

from __future__ import annotations

from avat3r_core.cli import main
from avat3r_core.config import REPO_ROOT, load_config
from avat3r_core.plan import CaptureSize, plan

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
    assert sum(result["jobs"].values()) == 8 * 256 + 1 + 2  # + train and evaluate of the one variant


def test_plan_command_prints_the_totals(capsys) -> None:
    assert main(["plan", "--subjects", "2", "--cameras", "8", "--frames", "40"]) == 0
    out = capsys.readouterr().out
    assert "capture: 2 subjects x 8 cameras x 40 frames" in out and "features" in out and "in total" in out

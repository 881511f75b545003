"""Shared fixtures: one tiny synthetic capture per test session, copied when a test needs to break it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids

TINY = SyntheticConfig(n_subjects=2, n_cameras=8, frames_per_segment=2, downsample=32, min_missing=3, seed=7)


class SyntheticCapture:
    """Paths and config of a generated capture."""

    def __init__(self, root: Path, groundtruth: Path, config: SyntheticConfig) -> None:
        self.root, self.groundtruth, self.config = root, groundtruth, config
        self.subjects = synthetic_subject_ids(config)

    def capture_section(self) -> dict:
        return {"dataset": "ava256", "root": str(self.root), "subjects_csv": None, "topology": None}


@pytest.fixture(scope="session")
def synthetic_capture(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCapture:
    base = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_capture(base / "capture", base / "groundtruth", TINY, workers=2, progress=False)
    return SyntheticCapture(base / "capture", base / "groundtruth", TINY)


@pytest.fixture
def capture_copy(synthetic_capture: SyntheticCapture, tmp_path: Path) -> SyntheticCapture:
    """A private copy of the capture that a test may corrupt."""
    root = tmp_path / "capture"
    shutil.copytree(synthetic_capture.root, root)
    return SyntheticCapture(root, synthetic_capture.groundtruth, synthetic_capture.config)

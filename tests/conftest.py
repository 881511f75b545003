"""Shared fixtures: one tiny synthetic capture per test session, copied when a test needs to break it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids
from avat3r_core.stages.crop import run_crop
from avat3r_core.stages.features import run_features
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.matting import run_matting
from avat3r_core.stages.positions import run_positions
from avat3r_core.stages.shards import run_shards, write_dataset_index
from avat3r_core.store.atomic import write_json_atomic
from tests.helpers import SHARD_STAGES, STAGES, plan

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


# -- the stage stores of one subject of the tiny capture, built once per session --------------------------


@pytest.fixture(scope="session")
def stores(synthetic_capture, tmp_path_factory) -> dict:
    """Matting and crop stores of the first subject (plate-difference matting, 64/83 px crops)."""
    out = tmp_path_factory.mktemp("stages")
    subject = synthetic_capture.subjects[0]
    reader, index, frames, views = plan(synthetic_capture.root, subject)
    summary = run_matting(
        reader,
        index,
        frames,
        views,
        STAGES["matting"],
        out / "matting.zarr",
        groundtruth=synthetic_capture.groundtruth,
        progress=False,
    )
    run_crop(
        reader,
        index,
        frames,
        views,
        out / "matting.zarr",
        STAGES["crop"],
        "src",
        out / "crops.zarr",
        progress=False,
    )
    return {
        "out": out,
        "subject": subject,
        "reader": reader,
        "index": index,
        "views": views,
        "summary": summary,
    }


@pytest.fixture(scope="session")
def mesh_positions(stores) -> dict:
    """The stores above plus mesh-backend position maps."""
    out = stores["out"]
    summary = run_positions(
        stores["reader"],
        out / "crops.zarr",
        stores["views"],
        {"backend": "mesh"},
        out / "positions.zarr",
        progress=False,
    )
    return dict(stores, summary=summary)


@pytest.fixture(scope="session")
def shard_inputs(mesh_positions, synthetic_capture, tmp_path_factory) -> dict:
    """The stores above plus tiny-random Sapiens features: everything a shard needs."""
    out = mesh_positions["out"]
    run_features(
        out / "crops.zarr",
        SHARD_STAGES["features"],
        0,
        out / "features.zarr",
        subject=mesh_positions["subject"],
        progress=False,
    )
    reader = Ava256Capture(synthetic_capture.root, mesh_positions["subject"])
    frames = select_frames(mesh_positions["index"].data, STAGES["frames"], 0)
    stores = {name: out / f"{name}.zarr" for name in ("crops", "positions", "features")}
    return {"reader": reader, "frames": frames, "stores": stores, "tmp": tmp_path_factory.mktemp("shards")}


@pytest.fixture(scope="session")
def shard_index(shard_inputs, mesh_positions, tmp_path_factory) -> Path:
    """A dataset index over the first subject's shard, which is in the train split (no held-out subjects)."""
    root = tmp_path_factory.mktemp("index")
    subject = mesh_positions["subject"]
    shard = root / subject / "shard.zarr"
    run_shards(
        shard_inputs["reader"], shard_inputs["frames"], shard_inputs["stores"], SHARD_STAGES["shards"], shard
    )
    write_json_atomic(root / subject / "views.json", mesh_positions["views"])
    write_dataset_index({subject: shard}, dict(SHARD_STAGES["shards"], test_count=0), root / "index.json")
    return root / "index.json"

"""Shards: cross-store checks, expression codes, the dataset index and `avat3r validate`, with bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from avat3r_core.cli import main
from avat3r_core.config import validate_sections
from avat3r_core.errors import CaptureError, ConfigError
from avat3r_core.stages.shards import assign_splits, run_shards, write_dataset_index
from avat3r_core.store.zarr_store import StoreError, open_store, write_store
from tests.helpers import SHARD_STAGES

CONFIG = SHARD_STAGES


def test_shard_holds_the_codes_and_records_the_stores(shard_inputs) -> None:
    out = shard_inputs["tmp"] / "AAA001" / "shard.zarr"
    summary = run_shards(
        shard_inputs["reader"], shard_inputs["frames"], shard_inputs["stores"], CONFIG["shards"], out
    )
    group = open_store(out)
    frames = group["frames"][...]
    assert np.array_equal(
        group["expression_codes"][1], shard_inputs["reader"].expression_code(int(frames[1]))
    )
    assert summary["feature_channels"] == 32 and summary["random_weights"] is True
    assert set(group.attrs["stores"]) == {"crops", "positions", "features"}
    assert (out.parent / group.attrs["stores"]["features"]["path"]).resolve() == shard_inputs["stores"][
        "features"
    ].resolve()


def test_flipped_byte_in_a_store_names_it(shard_inputs, tmp_path) -> None:
    stores = dict(shard_inputs["stores"])
    copy = tmp_path / "positions.zarr"
    shutil.copytree(stores["positions"], copy)
    shard = max((copy / "confidence").rglob("c*"), key=lambda p: p.stat().st_size)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    stores["positions"] = copy
    with pytest.raises(StoreError, match="confidence") as caught:
        run_shards(
            shard_inputs["reader"], shard_inputs["frames"], stores, CONFIG["shards"], tmp_path / "shard.zarr"
        )
    assert str(copy) in str(caught.value)
    assert not (tmp_path / "shard.zarr").exists()
    assert main(["validate", str(copy)]) == 1


def test_feature_grid_mismatch_names_subject_and_array(shard_inputs, tmp_path) -> None:
    real = open_store(shard_inputs["stores"]["features"])
    n_c, n_t, _, _, channels = real["features"].shape
    fake = tmp_path / "features.zarr"
    with write_store(fake, stage="features", subject="AAA001", config={}) as store:
        store.create_images("features", (n_c, n_t, 4, 4, channels), dtype="float16")
        for name in ("valid", "camera_ids", "frames"):
            store.write_array(name, real[name][...])
    stores = dict(shard_inputs["stores"], features=fake)
    with pytest.raises(
        StoreError, match=r"subject AAA001: array 'features' has a 4x4 grid, the 64 px crops a 8x8"
    ):
        run_shards(
            shard_inputs["reader"], shard_inputs["frames"], stores, CONFIG["shards"], tmp_path / "shard.zarr"
        )


def test_dataset_index_splits_and_missing_stores(shard_inputs, tmp_path) -> None:
    out = shard_inputs["tmp"] / "AAA001" / "shard.zarr"
    if not out.exists():
        run_shards(
            shard_inputs["reader"], shard_inputs["frames"], shard_inputs["stores"], CONFIG["shards"], out
        )
    index = write_dataset_index(
        {"AAA001": out}, dict(CONFIG["shards"], test_count=0), tmp_path / "index.json"
    )
    assert index["subjects"]["AAA001"]["split"] == "train" and index["counts"]["train"] == 1
    stores = index["subjects"]["AAA001"]["stores"]
    assert (tmp_path / stores["crops"]).resolve() == shard_inputs["stores"]["crops"].resolve()
    with pytest.raises(CaptureError, match=r"subject ZZZ999, file .*: shard missing or incomplete"):
        write_dataset_index(
            {"ZZZ999": tmp_path / "nope" / "shard.zarr"}, CONFIG["shards"], tmp_path / "i2.json"
        )
    assert not (tmp_path / "i2.json").exists()


def test_split_assignment() -> None:
    cfg = validate_sections({"shards": {"test_count": 1, "validation_count": 1}})["shards"]
    assert assign_splits(["C3", "A1", "B2", "D4"], cfg) == {
        "A1": "train",
        "B2": "train",
        "C3": "validation",
        "D4": "test",
    }
    listed = dict(cfg, test_subjects=["A1"])
    assert assign_splits(["A1", "B2", "C3"], listed)["A1"] == "test"
    with pytest.raises(ConfigError, match=r"shards\.test_subjects.*not in this run: Q9"):
        assign_splits(["A1"], dict(cfg, test_subjects=["Q9"]))


def test_validate_command_reports_ok(shard_inputs, capsys) -> None:
    path = Path(shard_inputs["stores"]["crops"])
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK"

"""The features stage: grid alignment with the model's tokens, stored values, labels for random networks."""

from __future__ import annotations

import numpy as np
import pytest

from avat3r_core.config import validate_sections
from avat3r_core.errors import ConfigError
from avat3r_core.models.sapiens import load_sapiens, write_random_sapiens
from avat3r_core.stages.features import run_features
from avat3r_core.stages.positions import InputCrops
from avat3r_core.store.manifest import verify_store
from avat3r_core.store.zarr_store import open_store

TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2}


def features_config(**overrides) -> dict:
    return validate_sections({"features": {"input_size": 128, "tiny": TINY, **overrides}})["features"]


def test_features_match_the_network_on_each_crop(mesh_positions, tmp_path) -> None:
    crops_path = mesh_positions["out"] / "crops.zarr"
    checkpoint = write_random_sapiens(tmp_path / "sapiens_tiny_clean.pth", TINY, seed=3)
    cfg = features_config(checkpoint=str(checkpoint), model="tiny")
    summary = run_features(crops_path, cfg, 0, tmp_path / "features.zarr", subject="AAA001", progress=False)
    group = open_store(tmp_path / "features.zarr")
    crops = InputCrops(crops_path)
    assert group["features"].shape == (len(crops.camera_ids), len(crops.frames), 8, 8, 32)  # 64 px crops / 8
    assert group.attrs["random_weights"] is True and "RANDOM WEIGHTS" in summary["model"]
    assert np.array_equal(group["valid"][...], crops.valid)
    extractor = load_sapiens(checkpoint, TINY, input_size=128)
    for c, t in np.argwhere(crops.valid)[:4]:
        expected = extractor(crops.rgb[c, t][None])[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(group["features"][c, t].astype(np.float32), expected, atol=2e-3, rtol=2e-3)
    assert not group["features"][...][~crops.valid].any()
    assert verify_store(tmp_path / "features.zarr") == []


def test_default_is_a_labelled_tiny_random_network(mesh_positions, tmp_path) -> None:
    summary = run_features(
        mesh_positions["out"] / "crops.zarr",
        features_config(),
        0,
        tmp_path / "f.zarr",
        subject="AAA001",
        progress=False,
    )
    assert summary["model"].endswith("RANDOM WEIGHTS") and summary["grid"] == 8


def test_feature_grid_must_match_the_token_grid(mesh_positions, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"features\.input_size.*8x8 token grid.*use 128"):
        run_features(
            mesh_positions["out"] / "crops.zarr",
            features_config(input_size=256),
            0,
            tmp_path / "f.zarr",
            subject="AAA001",
        )
    assert not (tmp_path / "f.zarr").exists()

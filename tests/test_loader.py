"""The training loader: one Avat3r sample per item, read from the shards of a tiny synthetic capture.

The stores come from the same module fixtures as the shard tests (matting, crop, mesh positions and tiny
random Sapiens features of one subject), so the loader is tested on real stage outputs, not hand-made
arrays, while the whole module stays within seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from avat3r_core.errors import CaptureError
from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.rays import plucker_rays
from avat3r_core.recon.data import Avat3rShardDataset, WeightedConcat
from avat3r_core.store.atomic import write_json_atomic
from avat3r_core.store.zarr_store import StoreError, open_store, write_store


@pytest.fixture(scope="module")
def index_path(shard_index) -> Path:
    return shard_index


@pytest.fixture(scope="module")
def dataset(index_path) -> Avat3rShardDataset:
    return Avat3rShardDataset(index_path, n_supervision=4, seed=3)


def _stores(index_path: Path, subject: str) -> dict:
    entry = json.loads(index_path.read_text())["subjects"][subject]
    out = {name: open_store(index_path.parent / rel) for name, rel in entry["stores"].items()}
    out["shard"] = open_store(index_path.parent / entry["shard"])
    return out


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_shapes_dtypes_and_values_match_the_stores(dataset, index_path) -> None:
    item = dataset[1]
    stores = _stores(index_path, item["subject"])
    crops = stores["crops"]
    size, size2 = crops["input/rgb"].shape[2], crops["supervision/rgb"].shape[2]
    channels = stores["features"]["features"].shape[-1]
    expected = {
        "input_rgb": (4, 3, size, size),
        "input_alpha": (4, 1, size, size),
        "plucker": (4, 6, size, size),
        "position": (4, 3, size, size),
        "confidence": (4, 1, size, size),
        "features": (4, channels, size // 8, size // 8),
        "input_K": (4, 3, 3),
        "input_w2c": (4, 4, 4),
        "target_rgb": (4, 3, size2, size2),
        "target_alpha": (4, 1, size2, size2),
        "target_K": (4, 3, 3),
        "target_w2c": (4, 4, 4),
        "expression": (stores["shard"]["expression_codes"].shape[1],),
    }
    for key, shape in expected.items():
        assert tuple(item[key].shape) == shape, key
        assert item[key].dtype == torch.float32, key
    assert float(item["input_rgb"].min()) >= 0.0 and float(item["input_rgb"].max()) <= 1.0

    frames = [int(f) for f in crops["input/frames"][...]]
    for v, (c, frame) in enumerate(
        zip(item["input_camera_index"].tolist(), item["input_frames"].tolist(), strict=True)
    ):
        t = frames.index(frame)
        assert crops["input/valid"][c, t] and stores["positions"]["valid"][c, t]
        camera = Camera(K=crops["input/K"][c, t], w2c=crops["input/w2c_head"][c, t], width=size, height=size)
        rays = torch.from_numpy(plucker_rays(camera).transpose(2, 0, 1).astype(np.float32))
        assert torch.equal(item["plucker"][v], rays)
        assert np.array_equal(item["position"][v].numpy(), stores["positions"]["position"][c, t])
        assert np.array_equal(item["confidence"][v, 0].numpy(), stores["positions"]["confidence"][c, t])
        features = stores["features"]["features"][c, t].astype(np.float32).transpose(2, 0, 1)
        assert np.array_equal(item["features"][v].numpy(), features)
        rgb = crops["input/rgb"][c, t].astype(np.float32).transpose(2, 0, 1) / 255.0
        assert np.array_equal(item["input_rgb"][v].numpy(), rgb)

    target = [int(f) for f in crops["supervision/frames"][...]].index(int(item["target_frame"]))
    for j, c in enumerate(item["target_camera_index"].tolist()):
        assert item["target_valid"][j] and crops["supervision/valid"][c, target]
        assert np.allclose(item["target_K"][j].numpy(), crops["supervision/K"][c, target])
        alpha = crops["supervision/alpha"][c, target].astype(np.float32) / 255.0
        assert np.array_equal(item["target_alpha"][j, 0].numpy(), alpha)
    shard = stores["shard"]
    row = [int(f) for f in shard["frames"][...]].index(int(item["target_frame"]))
    assert np.array_equal(item["expression"].numpy(), shard["expression_codes"][row])


def test_input_views_are_distinct_pooled_cameras(dataset, index_path, mesh_positions) -> None:
    pool = set(mesh_positions["views"]["input_cameras"])
    ids = dataset.camera_ids(mesh_positions["subject"])
    for i in range(len(dataset)):
        cameras = dataset.draw(i)["cameras"].tolist()
        assert len(set(cameras)) == 4 and {ids[c] for c in cameras} <= pool
    assert len(dataset) == sum(s.targets.size for s in dataset.subjects)


def test_deterministic_per_seed_epoch_and_index(index_path) -> None:
    a = Avat3rShardDataset(index_path, seed=5)
    b = Avat3rShardDataset(index_path, seed=5)
    assert _equal(a[2], b[2])
    draws = [a.draw(i)["cameras"].tolist() + a.draw(i)["times"].tolist() for i in range(len(a))]
    a.set_epoch(1)
    assert draws != [a.draw(i)["cameras"].tolist() + a.draw(i)["times"].tolist() for i in range(len(a))]
    a.set_epoch(0)
    assert draws == [a.draw(i)["cameras"].tolist() + a.draw(i)["times"].tolist() for i in range(len(a))]


def test_workers_and_distributed_sampler_give_the_same_samples(dataset) -> None:
    serial = list(DataLoader(dataset, batch_size=2, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel)
    for x, y in zip(serial, parallel, strict=True):
        assert _equal(x, y)
    seen = {}
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for i in list(sampler)[:2]:
            seen[i] = dataset[i]
    for i, item in seen.items():
        assert torch.equal(item["input_camera_index"], serial[i // 2]["input_camera_index"][i % 2])


def test_same_timestep_mode(index_path) -> None:
    ds = Avat3rShardDataset(index_path, same_timestep=True, samples_per_epoch=12, seed=1)
    assert len(ds) == 12
    for i in range(len(ds)):
        plan = ds.draw(i)
        subject = ds.subjects[plan["subject"]]
        assert len(set(plan["times"].tolist())) == 1
        assert subject.input_valid[plan["cameras"], plan["times"][0]].all()


def test_weighted_concat(index_path) -> None:
    a = Avat3rShardDataset(index_path, seed=1)
    b = Avat3rShardDataset(index_path, seed=2, same_timestep=True)
    mixed = WeightedConcat([a, b], [0.0, 1.0], length=20, seed=4)
    assert {mixed.locate(i)[0] for i in range(20)} == {1}
    mixed = WeightedConcat([a, b], [1.0, 3.0], length=50, seed=4)
    picks = [mixed.locate(i) for i in range(50)]
    assert {d for d, _ in picks} == {0, 1} and picks == [mixed.locate(i) for i in range(50)]
    d, j = picks[0]
    assert _equal(mixed[0], [a, b][d][j])
    mixed.set_epoch(3)
    assert a.epoch == b.epoch == 3


def test_missing_store_and_bad_feature_grid(index_path, shard_inputs, tmp_path) -> None:
    index = json.loads(index_path.read_text())
    subject = next(iter(index["subjects"]))
    entry = index["subjects"][subject]
    root = index_path.parent
    broken = json.loads(json.dumps(index))
    broken["subjects"][subject]["stores"]["positions"] = str(root / "nope" / "positions.zarr")
    write_json_atomic(root / "broken.json", broken)
    with pytest.raises(
        CaptureError, match=rf"subject {subject}, file .*nope/positions.zarr: store 'positions'"
    ):
        Avat3rShardDataset(root / "broken.json")

    real = open_store(root / entry["stores"]["features"])
    n_c, n_t, _, _, channels = real["features"].shape
    fake = tmp_path / "features.zarr"
    with write_store(fake, stage="features", subject=subject, config={}) as store:
        store.create_images("features", (n_c, n_t, 2, 2, channels), dtype="float16")
        for name in ("valid", "camera_ids", "frames"):
            store.write_array(name, real[name][...])
    bad = json.loads(json.dumps(index))
    bad["subjects"][subject]["stores"]["features"] = str(fake)
    write_json_atomic(root / "bad_grid.json", bad)
    with pytest.raises(StoreError, match=rf"subject {subject}: array 'features' has a 2x2 grid"):
        Avat3rShardDataset(root / "bad_grid.json")


def test_too_few_supervision_cameras_are_padded_and_flagged(index_path) -> None:
    padded = Avat3rShardDataset(index_path, n_supervision=100)
    item = padded[0]
    plan = padded.draw(0)
    subject = padded.subjects[plan["subject"]]
    n_valid = int(subject.supervision_valid[:, plan["target"]].sum())
    assert item["target_rgb"].shape[0] == 100 and int(item["target_valid"].sum()) == n_valid
    assert not item["target_rgb"][n_valid:].any() and (item["target_camera_index"][n_valid:] == -1).all()
    assert len(set(item["target_camera_index"][:n_valid].tolist())) == n_valid
    short = Avat3rShardDataset(index_path, n_supervision=100, pad_supervision=False)[0]
    assert short["target_rgb"].shape[0] == n_valid and bool(short["target_valid"].all())

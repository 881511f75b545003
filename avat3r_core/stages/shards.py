"""Stage `shards`: check a subject's stage stores as one training shard, and index the dataset.

The stage stores *are* the shards: crops.zarr, positions.zarr and features.zarr hold everything training
reads except the expression codes, and features (~15 MB per input view at 2B) must not be stored twice. So
this stage copies nothing: it verifies every store against its manifest, checks that the stores agree with
each other (same input cameras and timesteps, position maps at the crop size, a feature grid equal to the
model's token grid), writes the expression codes of the subject's frames to `shard.zarr`, and records the
stores with the sha256 of their manifests, so a later change to any of them is detectable. The dataset index
(one small JSON for all subjects) lists every subject's shard and its split.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from avat3r_core.capture.base import CaptureReader
from avat3r_core.errors import CaptureError, ConfigError
from avat3r_core.stages import TOKEN_PATCH
from avat3r_core.store.atomic import write_json_atomic
from avat3r_core.store.manifest import verify_store
from avat3r_core.store.zarr_store import MANIFEST_NAME, StoreError, open_store, write_store

log = logging.getLogger(__name__)
SHARD_STORES = ("crops", "positions", "features")


def _ids(group, prefix: str = "") -> tuple[list[str], list[int]]:
    return [str(c) for c in group[f"{prefix}camera_ids"][...]], [
        int(f) for f in group[f"{prefix}frames"][...]
    ]


def check_consistency(subject: str, stores: dict[str, Path]) -> dict[str, Any]:
    """Raise StoreError naming the subject, store and array where the stores disagree; return the shapes."""
    crops, positions, features = (open_store(stores[name]) for name in SHARD_STORES)
    reference = _ids(crops, "input/")
    for name, group in (("positions", positions), ("features", features)):
        if _ids(group) != reference:
            raise StoreError(
                f"subject {subject}: input cameras or timesteps differ from crops.zarr", path=stores[name]
            )
    size = crops["input/rgb"].shape[2]
    if tuple(positions["position"].shape[-2:]) != (size, size):
        raise StoreError(
            f"subject {subject}: array 'position' is {positions['position'].shape[-2:]}, crops are {size} px",
            path=stores["positions"],
        )
    grid = features["features"].shape[2:4]
    if tuple(grid) != (size // TOKEN_PATCH, size // TOKEN_PATCH):
        raise StoreError(
            f"subject {subject}: array 'features' has a {grid[0]}x{grid[1]} grid, the {size} px crops a "
            f"{size // TOKEN_PATCH}x{size // TOKEN_PATCH} token grid",
            path=stores["features"],
        )
    return {"crop_size": int(size), "feature_channels": int(features["features"].shape[-1])}


def run_shards(
    reader: CaptureReader,
    frames: dict[str, Any],
    stores: dict[str, Path],
    cfg: dict[str, Any],
    out: str | Path,
) -> dict[str, Any]:
    """Verify a subject's stores, check that they agree, and write its shard: the expression codes of every
    frame the stores use (from the reader's `expression_source`) and what made the features."""
    subject = reader.subject
    if cfg["verify"]:
        for name in SHARD_STORES:
            bad = verify_store(stores[name])
            if bad:
                raise StoreError(
                    f"subject {subject}: arrays differ from the manifest: {', '.join(bad)}", path=stores[name]
                )
    shapes = check_consistency(subject, stores)
    wanted = sorted({int(f) for f, _ in frames["input"]} | {int(f) for f in frames["supervision"]})
    codes = np.stack([reader.expression_code(frame) for frame in wanted])
    out = Path(out)
    record = {
        name: {
            "path": _relative(stores[name], out.parent),
            "manifest_sha256": hashlib.sha256((Path(stores[name]) / MANIFEST_NAME).read_bytes()).hexdigest(),
        }
        for name in SHARD_STORES
    }
    with write_store(
        out, stage="shards", subject=subject, config=cfg, extra_attrs={"stores": record, **shapes}
    ) as store:
        store.write_array("expression_codes", codes.astype(np.float32))
        store.write_array("frames", np.asarray(wanted, dtype=np.int64))
        random = any(bool(open_store(stores[name]).attrs.get("random_weights")) for name in SHARD_STORES)
        oracle = bool(open_store(stores["positions"]).attrs.get("oracle"))
        extractor = open_store(stores["features"]).attrs.get("summary", {})
        store.set_attrs(
            random_weights=random,
            oracle_positions=oracle,
            # what a trained model must match at evaluation (recon/compat.py)
            features={"model": extractor.get("model"), "fingerprint": extractor.get("fingerprint")},
            expression={"source": reader.expression_source, "dim": int(codes.shape[1])},
        )
    log.info(
        "subject %s: shard of %s verified (%d px crops, %d feature channels), %d expression codes (%d-d)%s",
        subject,
        ", ".join(SHARD_STORES),
        shapes["crop_size"],
        shapes["feature_channels"],
        len(wanted),
        codes.shape[1],
        ("; contains outputs of RANDOM-WEIGHT networks" if random else "")
        + ("; position maps are the synthetic ORACLE (ground truth)" if oracle else ""),
    )
    return {
        "subject": subject,
        **shapes,
        "codes": len(wanted),
        "random_weights": random,
        "oracle_positions": oracle,
    }


def assign_splits(
    subjects: list[str], cfg: dict[str, Any], *, evaluation_only: bool = False
) -> dict[str, str]:
    """train / validation / test per subject: the listed ids, else the last `test_count` subjects and the
    `validation_count` before them (sorted ids, so the split does not depend on the order of discovery).

    An evaluation-only capture (`capture.evaluation_only`, NeRSemble by default) trains nothing: every
    subject not listed for validation is a test subject, whatever `test_count` says.
    """
    for key in ("test_subjects", "validation_subjects"):
        unknown = sorted(set(cfg[key]) - set(subjects))
        if unknown:
            raise ConfigError(f"shards.{key}", f"not in this run: {', '.join(unknown)}")
    ordered = sorted(subjects)
    if evaluation_only:
        validation = set(cfg["validation_subjects"])
        return {s: "validation" if s in validation else "test" for s in ordered}
    test = list(cfg["test_subjects"]) or (ordered[-cfg["test_count"] :] if cfg["test_count"] else [])
    rest = [s for s in ordered if s not in test]
    validation = list(cfg["validation_subjects"]) or (
        rest[-cfg["validation_count"] :] if cfg["validation_count"] else []
    )
    return {s: "test" if s in test else "validation" if s in validation else "train" for s in ordered}


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def write_dataset_index(
    shards: dict[str, Path],
    cfg: dict[str, Any],
    out: str | Path,
    *,
    dataset: str = "unknown",
    evaluation_only: bool = False,
) -> dict[str, Any]:
    """One small JSON over all subjects: each subject's shard (and its stores), its split, what made its
    features and codes; and the dataset's name (what a model trained on it records)."""
    out = Path(out)
    entries = {}
    for subject, path in sorted(shards.items()):
        try:
            group = open_store(path)
        except StoreError:
            raise CaptureError(f"shard missing or incomplete ({path})", subject=subject, file=path) from None
        stores = dict(group.attrs["stores"])
        for name, info in stores.items():
            if not (Path(path).parent / info["path"]).joinpath(MANIFEST_NAME).exists():
                raise CaptureError(
                    f"store '{name}' of the shard is missing", subject=subject, file=info["path"]
                )
        entries[subject] = {
            "shard": _relative(path, out.parent),
            "stores": {
                name: _relative(Path(path).parent / info["path"], out.parent) for name, info in stores.items()
            },
            "random_weights": bool(group.attrs["random_weights"]),
            "oracle_positions": bool(group.attrs.get("oracle_positions", False)),
            "features": dict(group.attrs.get("features") or {}),
            "expression": dict(group.attrs.get("expression") or {}),
        }
    splits = assign_splits(list(entries), cfg, evaluation_only=evaluation_only)
    for subject, split in splits.items():
        entries[subject]["split"] = split
    index = {
        "dataset": dataset,
        # no training on this capture, in any split (recon/train.py refuses it, also as a train.mix member)
        "evaluation_only": bool(evaluation_only),
        "subjects": entries,
        "counts": {k: sum(v == k for v in splits.values()) for k in ("train", "validation", "test")},
    }
    write_json_atomic(out, index)
    log.info("dataset index: %s", ", ".join(f"{n} {k}" for k, n in index["counts"].items()))
    return index

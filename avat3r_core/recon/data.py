"""PyTorch datasets over the preprocessed shards: one item is one Avat3r training sample.

A sample is what one forward/backward pass of Avat3r needs: ``V`` input views of one subject (picked with
the paper's k-farthest viewpoint sampler, each at its own input timestep), their position, confidence and
Sapiens feature maps, Plücker rays of the input crop cameras, and ``N`` supervision views at one target
timestep together with the target's expression code.

Design constraints and why:

* **Deterministic per item.** Item ``i`` of epoch ``e`` draws everything from
  ``np.random.default_rng([seed, e, i])``; there is no shared random stream, so the result depends neither
  on the worker that loads it nor on the order items are requested (DataLoader workers, DistributedSampler
  shards and resumed runs all see the same samples). :meth:`Avat3rShardDataset.set_epoch` changes ``e``.
* **Lazy store handles.** Zarr groups are opened on first use in the process that reads them and are never
  pickled (``__getstate__`` drops them), so ``DataLoader(num_workers>0)`` with fork or spawn is safe.
  Construction reads only the small metadata arrays (validity masks, ids, frames), and fails early with
  an error naming the subject and path when a store listed in the index is missing.
* **Collate-friendly.** Every field is a tensor except ``subject`` (a string); camera identities are
  returned as indices into the store's camera axis (``input_camera_index``, ``target_camera_index``),
  mapped back to id strings by :meth:`Avat3rShardDataset.camera_ids`. Supervision views are padded to
  ``n_supervision`` with zeros and flagged by ``target_valid`` when a timestep has fewer valid cameras
  (``pad_supervision=False`` returns fewer instead, which only collates with batch size 1).
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from avat3r_core.errors import CaptureError
from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.rays import plucker_rays
from avat3r_core.geometry.views import k_farthest_sample
from avat3r_core.stages.shards import SHARD_STORES, check_consistency
from avat3r_core.store.zarr_store import MANIFEST_NAME, StoreError, open_store

_SAME_TIMESTEP_TRIES = 16


@dataclass
class _Subject:
    """Small per-subject metadata read once at construction (picklable: numpy arrays and paths only)."""

    name: str
    stores: dict[str, Path]  # crops, positions, features, shard
    input_cameras: list[str]  # camera axis of the input arrays
    input_frames: np.ndarray  # (Ti,) int64
    input_valid: np.ndarray  # (Ci, Ti) bool: crop, position map and features all present
    pool: np.ndarray  # (P,) indices into input_cameras: sampler pool with >= 1 valid timestep
    centers: np.ndarray  # (Ci, 3) reference centres of the input cameras (rows outside the pool unused)
    supervision_cameras: list[str]
    supervision_frames: np.ndarray  # (Ts,) int64
    supervision_valid: np.ndarray  # (Cs, Ts) bool
    targets: np.ndarray  # (K,) supervision timestep indices with >= 1 valid camera
    code_row: dict[int, int]  # frame -> row of shard.zarr expression_codes
    crop_size: int
    supervision_size: int


def _load_subject(name: str, entry: dict[str, Any], root: Path, views_json_name: str) -> _Subject:
    """Check that the subject's stores exist and agree, and read the metadata the sampler needs."""
    stores = {store: root / rel for store, rel in entry["stores"].items()}
    stores["shard"] = root / entry["shard"]
    for store in (*SHARD_STORES, "shard"):
        path = stores.get(store)
        if path is None:
            raise CaptureError(f"the dataset index lists no '{store}' store", subject=name)
        if not (path / MANIFEST_NAME).is_file():
            raise CaptureError(
                f"store '{store}' listed in the dataset index is missing", subject=name, file=path
            )
    views_path = stores["shard"].parent / views_json_name
    if not views_path.is_file():
        raise CaptureError(
            "views file (sampler pool, reference centres) is missing", subject=name, file=views_path
        )
    check_consistency(name, stores)  # same cameras/timesteps, position size, feature grid == crop / 8

    crops, positions, features = (open_store(stores[s]) for s in SHARD_STORES)
    input_cameras = [str(c) for c in crops["input/camera_ids"][...]]
    valid = (
        crops["input/valid"][...].astype(bool)
        & positions["valid"][...].astype(bool)
        & features["valid"][...].astype(bool)
    )
    views = json.loads(views_path.read_text())
    all_ids = [str(c) for c in views["camera_ids"]]
    reference = np.asarray(views["reference_centers"], dtype=np.float64)
    centers = np.zeros((len(input_cameras), 3))
    pooled = set(map(str, views["input_cameras"]))
    pool = []
    for c, camera in enumerate(input_cameras):
        if camera in all_ids:
            centers[c] = reference[all_ids.index(camera)]
            if camera in pooled and valid[c].any():
                pool.append(c)
    supervision_valid = crops["supervision/valid"][...].astype(bool)
    shard = open_store(stores["shard"])
    code_row = {int(f): i for i, f in enumerate(shard["frames"][...])}
    supervision_frames = crops["supervision/frames"][...].astype(np.int64)
    targets = np.flatnonzero(supervision_valid.any(axis=0))
    missing = [int(supervision_frames[t]) for t in targets if int(supervision_frames[t]) not in code_row]
    if missing:
        raise StoreError(
            f"subject {name}: no expression code for supervision frames {missing}",
            path=stores["shard"],
            array="expression_codes",
        )
    return _Subject(
        name=name,
        stores=stores,
        input_cameras=input_cameras,
        input_frames=crops["input/frames"][...].astype(np.int64),
        input_valid=valid,
        pool=np.asarray(pool, dtype=np.int64),
        centers=centers,
        supervision_cameras=[str(c) for c in crops["supervision/camera_ids"][...]],
        supervision_frames=supervision_frames,
        supervision_valid=supervision_valid,
        targets=targets,
        code_row=code_row,
        crop_size=int(crops["input/rgb"].shape[2]),
        supervision_size=int(crops["supervision/rgb"].shape[2]),
    )


class Avat3rShardDataset(Dataset):
    """Avat3r training samples from the subjects of one split of a dataset index.

    Length: ``samples_per_epoch`` if given, else the number of (subject, supervision timestep) pairs with at
    least one valid supervision camera (item ``i`` is then pair ``i``). With ``samples_per_epoch`` the
    subject is ``i mod n_subjects`` (every subject equally often, whatever its number of frames) and the
    target timestep is drawn.
    """

    def __init__(
        self,
        index_path: str | Path,
        split: str | None = "train",
        *,
        n_views: int = 4,
        n_candidates: int = 10,
        n_supervision: int = 8,
        same_timestep: bool = False,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        views_json_name: str = "views.json",
        pad_supervision: bool = True,
    ) -> None:
        index_path = Path(index_path)
        if not index_path.is_file():
            raise CaptureError("dataset index is missing", file=index_path)
        if n_views < 1 or n_candidates < n_views or n_supervision < 1:
            raise ValueError(
                f"need 1 <= n_views <= n_candidates and n_supervision >= 1, got {n_views}, {n_candidates}, "
                f"{n_supervision}"
            )
        index = json.loads(index_path.read_text())
        names = sorted(s for s, e in index["subjects"].items() if split is None or e.get("split") == split)
        if not names:
            raise CaptureError(f"no subjects in split '{split}'", file=index_path)
        self.subjects = [
            _load_subject(s, index["subjects"][s], index_path.parent, views_json_name) for s in names
        ]
        for subject in self.subjects:
            if subject.pool.size < n_views:
                raise CaptureError(
                    f"only {subject.pool.size} input cameras with a valid view, {n_views} views requested",
                    subject=subject.name,
                )
        self.n_views, self.n_candidates, self.n_supervision = n_views, n_candidates, n_supervision
        self.same_timestep, self.pad_supervision = same_timestep, pad_supervision
        self.seed, self.epoch = int(seed), 0
        self.samples_per_epoch = samples_per_epoch
        self._pairs = [(s, int(t)) for s, subject in enumerate(self.subjects) for t in subject.targets]
        self._handles: dict[str, Any] = {}
        self._handles_pid = -1
        self._arrays: dict[str, np.ndarray] = {}  # small arrays cached per process (plain numpy, picklable)

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self._pairs) if self.samples_per_epoch is None else int(self.samples_per_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draw of every item (call once per epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_handles_pid"] = {}, -1  # zarr handles are per process
        return state

    def camera_ids(self, subject: str, kind: str = "input") -> list[str]:
        """The camera id strings that ``input_camera_index`` / ``target_camera_index`` index into."""
        meta = self.subjects[[s.name for s in self.subjects].index(subject)]
        return list(meta.input_cameras if kind == "input" else meta.supervision_cameras)

    def _small(self, subject: _Subject, store: str, name: str) -> np.ndarray:
        """Small per-subject arrays (intrinsics, extrinsics), read once per process."""
        key = f"{subject.name}/{store}/{name}"
        if key not in self._arrays:
            self._arrays[key] = self._group(subject, store)[name][...]
        return self._arrays[key]

    def _group(self, subject: _Subject, store: str) -> Any:
        if self._handles_pid != os.getpid():  # forked after opening: zarr handles must not be shared
            self._handles, self._handles_pid = {}, os.getpid()
        key = f"{subject.name}/{store}"
        if key not in self._handles:
            self._handles[key] = open_store(subject.stores[store])
        return self._handles[key]

    # ------------------------------------------------------------------ sampling
    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def draw(self, i: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The indices item ``i`` reads (subject, target timestep, cameras, timesteps), without reading."""
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for a dataset of {len(self)}")
        rng = self.rng(i) if rng is None else rng
        if self.samples_per_epoch is None:
            s, target = self._pairs[i]
        else:
            s = i % len(self.subjects)
            target = int(rng.choice(self.subjects[s].targets))
        subject = self.subjects[s]
        cameras, times = self._draw_inputs(subject, rng)
        usable = np.flatnonzero(subject.supervision_valid[:, target])
        n = min(self.n_supervision, usable.size)
        supervision = rng.choice(usable, size=n, replace=False).astype(np.int64)
        return {
            "subject": s,
            "target": target,
            "cameras": cameras,
            "times": times,
            "supervision": supervision,
        }

    def _draw_inputs(self, subject: _Subject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        valid = subject.input_valid
        if not self.same_timestep:
            cameras = self._k_farthest(subject, subject.pool, rng)
            times = np.array([rng.choice(np.flatnonzero(valid[c])) for c in cameras], dtype=np.int64)
            return cameras, times
        for _ in range(_SAME_TIMESTEP_TRIES):
            cameras = self._k_farthest(subject, subject.pool, rng)
            common = np.flatnonzero(valid[cameras].all(axis=0))
            if common.size:
                return cameras, np.full(self.n_views, rng.choice(common), dtype=np.int64)
        # Rare: the drawn cameras keep missing a shared timestep. Draw the timestep first, then sample among
        # the pooled cameras valid there, so a sample always exists when any timestep has n_views cameras.
        counts = valid[subject.pool].sum(axis=0)
        usable = np.flatnonzero(counts >= self.n_views)
        if not usable.size:
            raise CaptureError(
                f"no input timestep has {self.n_views} valid cameras (same_timestep)", subject=subject.name
            )
        t = int(rng.choice(usable))
        cameras = self._k_farthest(subject, subject.pool[valid[subject.pool, t]], rng)
        return cameras, np.full(self.n_views, t, dtype=np.int64)

    def _k_farthest(self, subject: _Subject, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return k_farthest_sample(
            subject.centers, ids, n_candidates=self.n_candidates, n_views=self.n_views, rng=rng
        )

    # ------------------------------------------------------------------ reading
    def __getitem__(self, i: int) -> dict[str, Any]:
        plan = self.draw(int(i))
        subject = self.subjects[plan["subject"]]
        crops = self._group(subject, "crops")
        positions = self._group(subject, "positions")
        features = self._group(subject, "features")
        shard = self._group(subject, "shard")
        size = subject.crop_size
        cams, times = plan["cameras"], plan["times"]
        views = list(zip(cams.tolist(), times.tolist(), strict=True))
        rgb = np.stack([crops["input/rgb"][c, t] for c, t in views])
        alpha = np.stack([crops["input/alpha"][c, t] for c, t in views])
        # Intrinsics and extrinsics come from per-process copies: one zarr read costs ~1 ms.
        K = self._small(subject, "crops", "input/K")[cams, times]
        w2c = self._small(subject, "crops", "input/w2c_head")[cams, times]
        plucker = np.stack(
            [
                plucker_rays(Camera(K=k, w2c=m, width=size, height=size)).transpose(2, 0, 1)
                for k, m in zip(K, w2c, strict=True)
            ]
        )
        position = np.stack([positions["position"][c, t] for c, t in views])
        confidence = np.stack([positions["confidence"][c, t] for c, t in views])
        feats = np.stack([features["features"][c, t] for c, t in views])

        target = plan["target"]
        chosen = plan["supervision"]
        n_out = self.n_supervision if self.pad_supervision else chosen.size
        s2 = subject.supervision_size
        t_rgb = np.zeros((n_out, s2, s2, 3), dtype=np.uint8)
        t_alpha = np.zeros((n_out, s2, s2), dtype=np.uint8)
        t_K = np.tile(np.eye(3), (n_out, 1, 1))
        t_w2c = np.tile(np.eye(4), (n_out, 1, 1))
        t_index = np.full(n_out, -1, dtype=np.int64)
        for j, c in enumerate(chosen.tolist()):
            t_rgb[j] = crops["supervision/rgb"][c, target]
            t_alpha[j] = crops["supervision/alpha"][c, target]
        if chosen.size:
            t_K[: chosen.size] = self._small(subject, "crops", "supervision/K")[chosen, target]
            t_w2c[: chosen.size] = self._small(subject, "crops", "supervision/w2c_head")[chosen, target]
            t_index[: chosen.size] = chosen
        frame = int(subject.supervision_frames[target])
        code = shard["expression_codes"][subject.code_row[frame]]

        return {
            "subject": subject.name,
            "input_rgb": _unit_float(rgb).permute(0, 3, 1, 2).contiguous(),
            "input_alpha": _unit_float(alpha)[:, None],
            "plucker": torch.from_numpy(plucker.astype(np.float32)),
            "position": torch.from_numpy(np.ascontiguousarray(position, dtype=np.float32)),
            "confidence": torch.from_numpy(np.ascontiguousarray(confidence, dtype=np.float32))[:, None],
            "features": torch.from_numpy(feats.astype(np.float32)).permute(0, 3, 1, 2).contiguous(),
            "input_K": torch.from_numpy(K.astype(np.float32)),
            "input_w2c": torch.from_numpy(w2c.astype(np.float32)),
            "input_camera_index": torch.from_numpy(plan["cameras"].astype(np.int64)),
            "input_frames": torch.from_numpy(subject.input_frames[plan["times"]]),
            "target_rgb": _unit_float(t_rgb).permute(0, 3, 1, 2).contiguous(),
            "target_alpha": _unit_float(t_alpha)[:, None],
            "target_K": torch.from_numpy(t_K.astype(np.float32)),
            "target_w2c": torch.from_numpy(t_w2c.astype(np.float32)),
            "target_camera_index": torch.from_numpy(t_index),
            "target_valid": torch.from_numpy(t_index >= 0),
            "target_frame": torch.tensor(frame, dtype=torch.int64),
            "expression": torch.from_numpy(np.asarray(code, dtype=np.float32)),
            "index": torch.tensor(int(i), dtype=torch.int64),
        }


def _unit_float(images: np.ndarray) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (crops are stored composited on black, so no unpremultiplying)."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)


class WeightedConcat(Dataset):
    """Several datasets mixed with sampling weights, e.g. the multi-view subjects plus the paper's 984
    single-frame identities for fine-tuning.

    Item ``i`` draws a member dataset with probability proportional to ``weights`` and an item of it
    uniformly, from ``np.random.default_rng([seed, epoch, i])``; the member item is then read with the
    member's own per-item determinism. ``set_epoch`` is forwarded to the members.
    """

    def __init__(
        self, datasets: Sequence[Dataset], weights: Sequence[float], length: int, seed: int = 0
    ) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise ValueError(
                f"need one weight per dataset, got {len(datasets)} datasets, {len(weights)} weights"
            )
        w = np.asarray(weights, dtype=np.float64)
        if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
        if any(len(d) == 0 for d in datasets):  # type: ignore[arg-type]
            raise ValueError("a member dataset is empty")
        self.datasets = list(datasets)
        self.cumulative = np.cumsum(w / w.sum())
        self.length, self.seed, self.epoch = int(length), int(seed), 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for dataset in self.datasets:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)

    def locate(self, i: int) -> tuple[int, int]:
        """(member dataset, item of it) that item ``i`` reads in the current epoch."""
        if not 0 <= i < self.length:
            raise IndexError(f"item {i} out of range for a dataset of {self.length}")
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        d = min(bisect.bisect_right(self.cumulative.tolist(), rng.random()), len(self.datasets) - 1)
        return d, int(rng.integers(len(self.datasets[d])))  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        d, j = self.locate(int(i))
        return self.datasets[d][j]

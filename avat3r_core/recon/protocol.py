"""The evaluation protocol: which held-out avatars are built from which inputs and scored on which targets.

A protocol file fixes, for one dataset, everything that decides an evaluation number except the model: the
held-out subjects, for each test avatar its input views (camera and input timestep, in farthest-point order
from a seeded random start, so a model that reads V views reads the first V and they are still spread
around the head), and its target frames with the supervision cameras scored at each. Targets are split into

* **reconstruction**: the target frame is the timestep of one of the avatar's inputs (the expression was
  seen), and
* **animation**: the target frame is none of them (a novel expression, driven by its expression code).

Built from the dataset index with a seed (:func:`build_protocol`), the file is plain JSON with a format
``version``; every variant of a run is scored on the same file, and a file kept with a paper's results can be
passed back (``evaluate.protocol.file``) to score a new model on exactly the same items. Loading
(:func:`load_protocol`) checks every subject, camera and frame against the index and raises a
:class:`ProtocolError` naming the first one that does not exist.

Input timesteps are drawn among the camera's valid input timesteps that also have supervision crops
(falling back to any valid input timestep), so that every avatar has reconstruction targets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from avat3r_core.errors import CaptureError
from avat3r_core.geometry.views import farthest_candidates
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.store.atomic import write_json_atomic

PROTOCOL_VERSION = 1
SPLITS = ("reconstruction", "animation")

# evaluate.protocol defaults (the schema fills the same values).
DEFAULTS: dict[str, Any] = {
    "input_views": 4,
    "avatars_per_subject": 1,
    "same_timestep": False,
    "reconstruction_frames": 4,
    "animation_frames": 4,
    "target_cameras": None,
}


class ProtocolError(CaptureError):
    """A protocol file that does not match the dataset index; names the subject, camera and frame."""


def _metadata(index: str | Path, split: str | None) -> Avat3rShardDataset:
    """Per-subject metadata (cameras, frames, validity, sampler pool) of one split, nothing else read."""
    return Avat3rShardDataset(index, split=split, n_views=1, n_candidates=1, n_supervision=1)


def _pick(rng: np.random.Generator, values: np.ndarray, count: int | None) -> np.ndarray:
    """``count`` of ``values`` drawn without replacement (all when count is None), sorted."""
    if count is None or count >= values.size:
        return np.sort(values)
    return np.sort(rng.choice(values, size=count, replace=False))


def build_protocol(
    index: str | Path,
    *,
    dataset: str,
    seed: int = 0,
    split: str = "test",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A protocol over the subjects of ``split`` of a dataset index; same seed and index -> same protocol."""
    cfg = dict(DEFAULTS, **(settings or {}))
    meta = _metadata(index, split)
    avatars = []
    for subject in meta.subjects:
        if subject.pool.size < cfg["input_views"]:
            raise ProtocolError(
                f"only {subject.pool.size} input cameras with a valid view, the protocol asks for "
                f"{cfg['input_views']} (evaluate.protocol.input_views)",
                subject=subject.name,
            )
        supervised = {int(f) for f in subject.supervision_frames[subject.targets]}
        for a in range(cfg["avatars_per_subject"]):
            digest = hashlib.sha256(f"{subject.name}/{a}".encode()).digest()
            rng = np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])
            pool = np.sort(subject.pool)
            start = int(pool[rng.integers(pool.size)])
            cameras = farthest_candidates(subject.centers, pool, start, cfg["input_views"])
            valid = subject.input_valid
            frames = subject.input_frames
            if cfg["same_timestep"]:
                common = np.flatnonzero(valid[cameras].all(axis=0))
                if not common.size:
                    raise ProtocolError(
                        f"no input timestep where all {len(cameras)} protocol cameras are valid "
                        "(evaluate.protocol.same_timestep)",
                        subject=subject.name,
                    )
                preferred = [t for t in common if int(frames[t]) in supervised]
                t = int(rng.choice(preferred or common))
                times = [t] * len(cameras)
            else:
                times = []
                for c in cameras:
                    usable = np.flatnonzero(valid[c])
                    preferred = [t for t in usable if int(frames[t]) in supervised]
                    times.append(int(rng.choice(preferred or usable)))
            inputs = [
                {"camera": subject.input_cameras[c], "frame": int(frames[t])}
                for c, t in zip(cameras.tolist(), times, strict=True)
            ]
            seen = {view["frame"] for view in inputs}
            target_frames = subject.supervision_frames[subject.targets]
            recon = np.array([f for f in target_frames if int(f) in seen], dtype=np.int64)
            novel = np.array([f for f in target_frames if int(f) not in seen], dtype=np.int64)
            chosen = {
                "reconstruction": _pick(rng, recon, cfg["reconstruction_frames"]),
                "animation": _pick(rng, novel, cfg["animation_frames"]),
            }
            frames_of = {kind: chosen[kind].tolist() for kind in SPLITS}
            columns = [
                int(np.flatnonzero(subject.supervision_frames == f)[0])
                for kind in SPLITS
                for f in frames_of[kind]
            ]
            video = _video_camera(subject.supervision_valid[:, columns]) if columns else None
            targets = []
            for kind in SPLITS:
                for frame in frames_of[kind]:
                    t = int(np.flatnonzero(subject.supervision_frames == frame)[0])
                    usable = np.flatnonzero(subject.supervision_valid[:, t])
                    # The clip camera is scored at every frame it sees, the others are drawn.
                    fixed = [video] if video is not None and video in usable else []
                    count = (
                        None if cfg["target_cameras"] is None else max(cfg["target_cameras"] - len(fixed), 0)
                    )
                    picked = sorted(fixed + _pick(rng, np.setdiff1d(usable, fixed), count).tolist())
                    targets.append(
                        {
                            "frame": int(frame),
                            "split": kind,
                            "cameras": [subject.supervision_cameras[c] for c in picked],
                        }
                    )
            targets.sort(key=lambda target: target["frame"])
            avatars.append(
                {
                    "id": f"{subject.name}/{a}",
                    "subject": subject.name,
                    "inputs": inputs,
                    "video_camera": None if video is None else subject.supervision_cameras[video],
                    "targets": targets,
                }
            )
    return {
        "version": PROTOCOL_VERSION,
        "dataset": dataset,
        "seed": int(seed),
        "split": split,
        "settings": cfg,
        "subjects": [subject.name for subject in meta.subjects],
        "avatars": avatars,
    }


def _video_camera(valid: np.ndarray) -> int | None:
    """The supervision camera valid at the most target frames (ties: the lowest index): JOD's clip camera."""
    counts = valid.sum(axis=1)
    return int(np.argmax(counts)) if counts.size and counts.max() > 0 else None


def write_protocol(protocol: Mapping[str, Any], path: str | Path) -> Path:
    write_json_atomic(Path(path), protocol)
    return Path(path)


def protocol_digest(protocol: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a protocol: the same items give the same digest."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()


def load_protocol(path: str | Path, index: str | Path | None = None) -> dict[str, Any]:
    """Read a protocol file; with ``index``, check every subject, camera and frame it names against it."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError("protocol file is missing", file=path)
    try:
        protocol = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"protocol is not valid JSON: {exc}", file=path) from None
    for key in ("version", "dataset", "seed", "avatars"):
        if key not in protocol:
            raise ProtocolError(f"protocol has no '{key}' entry", file=path)
    if protocol["version"] != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol format version {protocol['version']}, this code reads version {PROTOCOL_VERSION}",
            file=path,
        )
    if index is not None:
        validate_protocol(protocol, index, path)
    return protocol


def validate_protocol(protocol: Mapping[str, Any], index: str | Path, path: str | Path | None = None) -> None:
    """Raise ProtocolError naming the first subject, camera or frame of ``protocol`` absent from ``index``."""
    entries = json.loads(Path(index).read_text()).get("subjects", {})
    names = sorted({avatar["subject"] for avatar in protocol["avatars"]})
    for name in names:
        if name not in entries:
            raise ProtocolError(
                "protocol names a subject the dataset index does not have", subject=name, file=path
            )
    meta = {subject.name: subject for subject in _metadata(index, None).subjects if subject.name in names}
    for avatar in protocol["avatars"]:
        subject = meta[avatar["subject"]]
        frames = [int(f) for f in subject.input_frames]
        seen = set()
        for view in avatar["inputs"]:
            camera, frame = str(view["camera"]), int(view["frame"])
            where = {"subject": subject.name, "camera": camera, "frame": frame, "file": path}
            if camera not in subject.input_cameras:
                raise ProtocolError("protocol input camera is not an input camera of the subject", **where)
            if frame not in frames:
                raise ProtocolError("protocol input frame is not an input timestep of the subject", **where)
            if not subject.input_valid[subject.input_cameras.index(camera), frames.index(frame)]:
                raise ProtocolError(
                    "protocol input view has no valid crop, position map or features", **where
                )
            seen.add(frame)
        supervision = [int(f) for f in subject.supervision_frames]
        for target in avatar["targets"]:
            frame = int(target["frame"])
            if frame not in supervision:
                raise ProtocolError(
                    "protocol target frame is not a supervision frame of the subject",
                    subject=subject.name,
                    frame=frame,
                    file=path,
                )
            expected = "reconstruction" if frame in seen else "animation"
            if target["split"] != expected:
                raise ProtocolError(
                    f"protocol target is marked {target['split']!r}, but the frame is "
                    f"{'among' if frame in seen else 'none of'} the avatar's input frames ({expected})",
                    subject=subject.name,
                    frame=frame,
                    file=path,
                )
            for camera in target["cameras"]:
                where = {"subject": subject.name, "camera": str(camera), "frame": frame, "file": path}
                if camera not in subject.supervision_cameras:
                    raise ProtocolError("protocol target camera is not a supervision camera", **where)
                c = subject.supervision_cameras.index(camera)
                if not subject.supervision_valid[c, supervision.index(frame)]:
                    raise ProtocolError("protocol target view has no valid supervision crop", **where)


def protocol_items(protocol: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One item per (avatar, target frame), in file order: what the evaluation renders and scores."""
    return [
        {
            "avatar": avatar["id"],
            "subject": avatar["subject"],
            "inputs": avatar["inputs"],
            "frame": target["frame"],
            "split": target["split"],
            "cameras": target["cameras"],
        }
        for avatar in protocol["avatars"]
        for target in avatar["targets"]
    ]


class ProtocolDataset(Avat3rShardDataset):
    """The dataset's samples for protocol items: the item's input views and target cameras, no sampling.

    ``n_views`` inputs are read (the first of the protocol's, in its farthest-point order); target views are
    the item's cameras, unpadded (batch size 1).
    """

    def __init__(self, index: str | Path, protocol: Mapping[str, Any], n_views: int) -> None:
        super().__init__(index, split=None, n_views=1, n_candidates=1, n_supervision=1, pad_supervision=False)
        self.items = protocol_items(protocol)
        short = [item for item in self.items if len(item["inputs"]) < n_views]
        if short:
            raise ProtocolError(
                f"the model reads {n_views} input views, the protocol gives avatar {short[0]['avatar']} only "
                f"{len(short[0]['inputs'])} (rebuild it with evaluate.protocol.input_views >= {n_views})"
            )
        self.n_views = n_views
        self._by_name = {subject.name: s for s, subject in enumerate(self.subjects)}

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, i: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        item = self.items[i]
        s = self._by_name[item["subject"]]
        subject = self.subjects[s]
        frames = subject.input_frames.tolist()
        inputs = item["inputs"][: self.n_views]
        return {
            "subject": s,
            "target": int(subject.supervision_frames.tolist().index(item["frame"])),
            "cameras": np.array([subject.input_cameras.index(v["camera"]) for v in inputs], dtype=np.int64),
            "times": np.array([frames.index(v["frame"]) for v in inputs], dtype=np.int64),
            "supervision": np.array(
                [subject.supervision_cameras.index(c) for c in item["cameras"]], dtype=np.int64
            ),
        }

"""Expression codes as a config choice: Ava-256 latents, or FLAME parameters from a face tracker.

The model is driven by one float vector per frame. `capture.expression_source` picks where it comes from:

* ``ava256``: the capture's own 256-d latent codes (Ava-256 `expression_codes/aeparams_1440000.pkl`;
  the synthetic capture ships a stand-in). NeRSemble has none.
* ``flame_gagavatar``: FLAME parameters from GAGAvatar's tracker (`xg-chu/GAGAvatar_track`), its
  ``optim.pkl`` or ``smoothed.pkl``: a dict keyed ``f"{video}_{idx}"`` (``video`` is everything before the
  last underscore, `engines/engine_core.py:build_video` / `build_minibatch`), each entry a dict of float32
  arrays ``shapecode (300,)``, ``expcode (100,)``, ``posecode (6,) = [0, 0, 0, jaw(3)]``, ``eyecode (6,)``,
  ``bbox (4,)``, ``transform_matrix (3, 4)`` (`engines/engine_optim.py:lightning_optimize`). The pose there
  lives in a per-frame 512x512 crop camera, so only expression, jaw and eyes are used.
  Caution, from the same source: `track_video.py` numbers ``idx`` over the frames it *kept* (only the
  frames with a detected head, and only every 2nd frame of a >50 fps video), not the video's frame index;
  `capture.flame_frame_stride`/`flame_frame_offset` map a regular pattern, a dropped detection is not
  recoverable from the pickle (rebuild the tracker's lmdb with your own keys, ``idx`` = frame id, and set
  ``flame_frame_index: frame``).
* ``flame_nersemble``: the NeRSemble benchmark's ``flame2023_tracking_v2.npz`` (keys
  `nersemble-benchmark:data/benchmark_data.py:FlameTracking`: shape (1,300), expression (T,100),
  rotation (T,3), rotation_matrices (T,3,3), translation (T,3), jaw (T,3), neck (T,3), eyes (T,6),
  frames (T,), scale (1,1)); row ``i`` is video frame ``i`` of its sequence, as the official
  `visualize_flame_tracking.py` uses it.

A FLAME code is ``[expression[:E], jaw (3), eyes (6)]`` with E = `capture.flame_dims.expression` (FLAME's
expression basis is ordered by variance, so a prefix is the usual truncation) and jaw / eyes included
when their dims are 3 / 6 (0 leaves them out). `model.expression_dim` must equal the total
(100 + 3 + 6 = 109 by default).

Only open pickles you trust (as with any pickle).
"""

from __future__ import annotations

import pickle
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from avat3r_core.capture.base import CaptureReader
from avat3r_core.errors import CaptureError, ConfigError

EXPRESSION_SOURCES = ("ava256", "flame_gagavatar", "flame_nersemble")
BENCHMARK_TRACKING_KEYS = ("expression", "rotation", "translation", "jaw", "eyes", "scale")
"""The npz keys the reader needs; `shape`, `neck`, `frames`, `rotation_matrices` are optional here."""


# -- FLAME parameters and the code built from them ------------------------------------------------------
@dataclass(frozen=True)
class FlameDims:
    """How many FLAME expression coefficients, and whether jaw (3) and eye poses (6), go into the code."""

    expression: int = 100
    jaw: int = 3
    eyes: int = 6

    def __post_init__(self) -> None:
        if self.expression < 0 or self.jaw not in (0, 3) or self.eyes not in (0, 6):
            raise ConfigError("capture.flame_dims", f"expression >= 0, jaw 0 or 3, eyes 0 or 6; got {self}")
        if self.total == 0:
            raise ConfigError("capture.flame_dims", "the code would be empty")

    @property
    def total(self) -> int:
        return self.expression + self.jaw + self.eyes

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> FlameDims:
        return cls(**dict(section or {}))


@dataclass(frozen=True)
class FlameFrame:
    """One frame's FLAME expression parameters: expression coefficients, jaw pose (axis-angle), eye poses
    (two axis-angles)."""

    expression: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray


def flame_code(params: FlameFrame, dims: FlameDims, *, where: str = "") -> np.ndarray:
    """The float32 code ``[expression[:E], jaw?, eyes?]`` of one frame."""
    expression = np.asarray(params.expression, dtype=np.float64).reshape(-1)
    if len(expression) < dims.expression:
        raise CaptureError(
            f"{where}has {len(expression)} FLAME expression coefficients, capture.flame_dims.expression "
            f"asks for {dims.expression}"
        )
    parts = [expression[: dims.expression]]
    if dims.jaw:
        parts.append(np.asarray(params.jaw, dtype=np.float64).reshape(3))
    if dims.eyes:
        parts.append(np.asarray(params.eyes, dtype=np.float64).reshape(6))
    code = np.concatenate(parts).astype(np.float32)
    if not np.isfinite(code).all():
        raise CaptureError(f"{where}FLAME parameters contain NaN or inf")
    return code


# -- GAGAvatar tracker output ---------------------------------------------------------------------------
def split_gagavatar_key(key: str) -> tuple[str, int]:
    """``"{video}_{idx}"`` -> (video, idx); the video name may itself contain underscores."""
    video, sep, idx = str(key).rpartition("_")
    if not sep or not idx.isdigit():
        raise ValueError(f"key {key!r} is not '{{video}}_{{idx}}'")
    return video, int(idx)


def load_gagavatar_tracking(path: str | Path) -> dict[str, dict[int, FlameFrame]]:
    """GAGAvatar's ``optim.pkl`` / ``smoothed.pkl`` as {video: {idx: FlameFrame}}."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = pickle.load(handle)
    except FileNotFoundError:
        raise CaptureError("GAGAvatar tracking file does not exist", file=path) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError) as exc:
        raise CaptureError(f"unreadable GAGAvatar tracking pickle: {exc}", file=path) from None
    if not isinstance(data, Mapping) or not data:
        raise CaptureError("GAGAvatar tracking must be a non-empty dict keyed '{video}_{idx}'", file=path)
    out: dict[str, dict[int, FlameFrame]] = {}
    for key, entry in data.items():
        try:
            video, idx = split_gagavatar_key(key)
            posecode = np.asarray(entry["posecode"], dtype=np.float64).reshape(-1)
            if posecode.shape != (6,):
                raise ValueError(f"posecode has shape {posecode.shape}, expected (6,) = [global 0, jaw]")
            frame = FlameFrame(
                expression=np.asarray(entry["expcode"], dtype=np.float64).reshape(-1),
                jaw=posecode[3:6],
                eyes=np.asarray(entry["eyecode"], dtype=np.float64).reshape(6),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CaptureError(f"bad GAGAvatar entry {key!r}: {exc!r}", file=path) from None
        out.setdefault(video, {})[idx] = frame
    return out


# -- NeRSemble benchmark tracking -----------------------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkTracking:
    """`flame2023_tracking_v2.npz` of one sequence (T rows); model-to-world is ``[s R | t]`` with
    ``R = Rotation.from_euler('XYZ', rotation)`` (intrinsic, as dreifus ``Pose.from_euler(..., 'XYZ')``
    in `nersemble-benchmark:models/flame.py:FlameProvider`), in the calibration's world units (metres)."""

    path: Path
    expression: np.ndarray  # (T, E)
    rotation: np.ndarray  # (T, 3) Euler XYZ, radians
    translation: np.ndarray  # (T, 3)
    jaw: np.ndarray  # (T, 3)
    eyes: np.ndarray  # (T, 6)
    scale: float
    frames: np.ndarray | None  # (T,) as shipped; the official code indexes rows by timestep instead

    def __len__(self) -> int:
        return len(self.expression)

    def rotation_matrix(self, row: int) -> np.ndarray:
        return Rotation.from_euler("XYZ", self.rotation[row]).as_matrix()

    def model_to_world(self, row: int) -> np.ndarray:
        """4x4 ``[s R | t]``: FLAME model space to world, as the benchmark applies it."""
        out = np.eye(4)
        out[:3, :3] = self.scale * self.rotation_matrix(row)
        out[:3, 3] = self.translation[row]
        return out

    def head_to_world(self, row: int) -> np.ndarray:
        """Rigid ``[R | t]``: the head-local frame is FLAME model space times `scale`, so the pipeline's
        head pose stays rigid (cameras need a rigid head pose) and head-local lengths are world metres."""
        out = np.eye(4)
        out[:3, :3] = self.rotation_matrix(row)
        out[:3, 3] = self.translation[row]
        return out

    def flame_frame(self, row: int) -> FlameFrame:
        return FlameFrame(self.expression[row], self.jaw[row], self.eyes[row])


def load_benchmark_tracking(path: str | Path) -> BenchmarkTracking:
    """Read and check a NeRSemble benchmark FLAME tracking npz."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: np.asarray(npz[key]) for key in npz.files}
    except FileNotFoundError:
        raise CaptureError("FLAME tracking file does not exist", file=path) from None
    except (OSError, ValueError, EOFError) as exc:
        raise CaptureError(f"unreadable FLAME tracking npz: {exc}", file=path) from None
    missing = [key for key in BENCHMARK_TRACKING_KEYS if key not in arrays]
    if missing:
        raise CaptureError(f"FLAME tracking lacks the keys {', '.join(missing)}", file=path)
    n = len(arrays["expression"])
    shapes = {
        "expression": (n, arrays["expression"].shape[-1] if arrays["expression"].ndim == 2 else -1),
        "rotation": (n, 3),
        "translation": (n, 3),
        "jaw": (n, 3),
        "eyes": (n, 6),
    }
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise CaptureError(
                f"FLAME tracking '{key}' has shape {arrays[key].shape}, expected {shape}", file=path
            )
    scale = np.asarray(arrays["scale"], dtype=np.float64).reshape(-1)
    if scale.size < 1 or not np.isfinite(scale[0]) or scale[0] <= 0:
        raise CaptureError(f"FLAME tracking 'scale' must be one positive number, got {scale}", file=path)
    if scale.size > 1 and not np.allclose(scale, scale[0]):
        raise CaptureError("FLAME tracking 'scale' must be isotropic", file=path)
    for key in ("rotation", "translation"):
        if not np.isfinite(arrays[key]).all():
            raise CaptureError(f"FLAME tracking '{key}' contains NaN or inf", file=path)
    return BenchmarkTracking(
        path=path,
        expression=arrays["expression"].astype(np.float64),
        rotation=arrays["rotation"].astype(np.float64),
        translation=arrays["translation"].astype(np.float64),
        jaw=arrays["jaw"].astype(np.float64),
        eyes=arrays["eyes"].astype(np.float64),
        scale=float(scale[0]),
        frames=arrays.get("frames"),
    )


# -- which code a (subject, frame) gets -----------------------------------------------------------------
def expression_source(capture: Mapping[str, Any]) -> str:
    """The configured source; null means the dataset's own (Ava-256 latents, NeRSemble benchmark FLAME)."""
    source = capture.get("expression_source")
    if source is None:
        return "flame_nersemble" if capture.get("dataset") == "nersemble" else "ava256"
    if source not in EXPRESSION_SOURCES:
        raise ConfigError("capture.expression_source", f"unknown source {source!r}")
    return source


def _fill(template: str, key: str, **values: str) -> str:
    """A path or name template with {subject}, {sequence} (= {segment}), {camera}; unknown fields fail."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = fields - set(values)
    if unknown:
        raise ConfigError(
            key, f"unknown placeholder(s) {sorted(unknown)} in {template!r} (have {sorted(values)})"
        )
    return template.format(**values)


def _positions(reader: CaptureReader) -> dict[int, tuple[str, int]]:
    """frame -> (segment, position of the frame within its segment, in capture order)."""
    out: dict[int, tuple[str, int]] = {}
    for segment, frames in reader.segments().items():
        for position, frame in enumerate(frames):
            out[frame] = (segment, position)
    return out


class FlameCodes:
    """FLAME codes of one subject from a tracker file, looked up per frame (files loaded once)."""

    def __init__(self, reader: CaptureReader, capture: Mapping[str, Any], source: str) -> None:
        self.reader = reader
        self.source = source
        self.dims = FlameDims.from_config(capture.get("flame_dims"))
        self.template = capture.get("flame_tracking")
        self.video_template = capture.get("flame_video")
        self.index_mode = capture.get("flame_frame_index", "position")
        self.stride = int(capture.get("flame_frame_stride", 1))
        self.offset = int(capture.get("flame_frame_offset", 0))
        self.root = str(capture.get("root", ""))
        if source == "flame_gagavatar" and not self.template:
            raise ConfigError(
                "capture.flame_tracking", "expression_source flame_gagavatar needs the tracker's pkl path"
            )
        if source == "flame_nersemble" and not self.template and not hasattr(reader, "tracking_path"):
            raise ConfigError(
                "capture.flame_tracking",
                f"expression_source flame_nersemble on a {reader.dataset} capture needs the npz path",
            )
        self._positions: dict[int, tuple[str, int]] | None = None
        self._files: dict[Path, Any] = {}

    def _path(self, segment: str) -> Path:
        if not self.template:
            return Path(self.reader.tracking_path(segment))  # type: ignore[attr-defined]
        return Path(
            _fill(
                self.template,
                "capture.flame_tracking",
                root=self.root,
                subject=self.reader.subject,
                sequence=segment,
                segment=segment,
            )
        )

    def _load(self, path: Path) -> Any:
        if path not in self._files:
            if self.source == "flame_gagavatar":
                self._files[path] = load_gagavatar_tracking(path)
            else:
                self._files[path] = load_benchmark_tracking(path)
        return self._files[path]

    def _tracker_index(self, frame: int, segment: str, position: int, path: Path) -> int:
        base = frame if self.index_mode == "frame" else position
        index, rest = divmod(base - self.offset, self.stride)
        if rest or index < 0:
            raise CaptureError(
                f"frame is not tracked: {self.index_mode} {base} is not offset {self.offset} + stride "
                f"{self.stride} x index (capture.flame_frame_offset / flame_frame_stride)",
                subject=self.reader.subject,
                frame=frame,
                file=path,
            )
        return index

    def code(self, frame: int) -> np.ndarray:
        if self._positions is None:
            self._positions = _positions(self.reader)
        if frame not in self._positions:
            raise CaptureError(
                "frame is not in the capture's timeline", subject=self.reader.subject, frame=frame
            )
        segment, position = self._positions[frame]
        path = self._path(segment)
        data = self._load(path)
        index = self._tracker_index(frame, segment, position, path)
        where = f"tracker entry {index} of "
        if self.source == "flame_nersemble":
            if index >= len(data):
                raise CaptureError(
                    f"FLAME tracking has {len(data)} rows, frame needs row {index} (sequence {segment})",
                    subject=self.reader.subject,
                    frame=frame,
                    file=path,
                )
            params = data.flame_frame(index)
        else:
            video = self._video(data, segment, path)
            if index not in data[video]:
                raise CaptureError(
                    f"no GAGAvatar entry '{video}_{index}' (sequence {segment}; the tracker numbers only the "
                    "frames in which it found a head)",
                    subject=self.reader.subject,
                    frame=frame,
                    file=path,
                )
            params = data[video][index]
        try:
            return flame_code(params, self.dims, where=where)
        except CaptureError as exc:
            raise CaptureError(str(exc), subject=self.reader.subject, frame=frame, file=path) from None

    def _video(self, data: dict[str, dict[int, FlameFrame]], segment: str, path: Path) -> str:
        if self.video_template:
            video = _fill(
                self.video_template,
                "capture.flame_video",
                subject=self.reader.subject,
                sequence=segment,
                segment=segment,
            )
            if video not in data:
                raise CaptureError(
                    f"no video {video!r} in the GAGAvatar tracking (has {sorted(data)[:5]})",
                    subject=self.reader.subject,
                    file=path,
                )
            return video
        if len(data) != 1:
            raise CaptureError(
                f"the GAGAvatar tracking holds {len(data)} videos ({sorted(data)[:5]}): "
                "set capture.flame_video",
                subject=self.reader.subject,
                file=path,
            )
        return next(iter(data))


def code_function(reader: CaptureReader, capture: Mapping[str, Any]) -> Callable[[int], np.ndarray] | None:
    """The frame -> code function of the configured source, or None for the reader's own codes."""
    source = expression_source(capture)
    if source == "ava256":
        return None
    return FlameCodes(reader, capture, source).code


def attach_expression_source(reader: CaptureReader, capture: Mapping[str, Any]) -> CaptureReader:
    """Make ``reader.expression_code`` follow `capture.expression_source` (an instance attribute shadows
    the class method; every stage keeps calling ``reader.expression_code(frame)``)."""
    function = code_function(reader, capture)
    if function is not None:
        reader.expression_code = function  # type: ignore[method-assign]
    reader.expression_source = expression_source(capture)
    return reader


def expression_code(reader: CaptureReader, capture: Mapping[str, Any], frame: int) -> np.ndarray:
    """The code of (reader.subject, frame) from the configured source (one-off; stages use the reader)."""
    function = code_function(reader, capture)
    return reader.expression_code(frame) if function is None else function(frame)

"""Reader for NeRSemble captures: the dataset v2 release and the NeRSemble benchmark layout.

Layouts under `capture.root` (shared/reference/datasets.md sections 2.2-2.6;
`tobias-kirschstein/nersemble-data` `constants.py` ASSETS and `data/nersemble_data.py`;
`tobias-kirschstein/nersemble-benchmark` `constants.py`, `data/benchmark_data.py`, `models/flame.py`):

    {pid:03d}/calibration/camera_params.json
        v2:        {"intrinsics": 3x3 (all cameras, full 2200 x 3208 frame), "world_2_cam": {serial: 4x4}}
        benchmark: {"intrinsics": {serial: 3x3} (at the video resolution), "world_2_cam": {serial: 4x4}}
    {pid:03d}/sequences/{SEQ}/images/cam_{serial}.mp4         one video per camera and sequence
    {pid:03d}/sequences/BACKGROUND/image_{serial}.jpg          v2: the camera's clean plate
    {pid:03d}/sequences/{SEQ}/alpha_maps/cam_{serial}.mp4     benchmark: alpha in channel 0
    {pid:03d}/sequences/{SEQ}/tracking/flame2023_tracking_v2.npz   benchmark (mono_flame_avatar): FLAME

The layout is read off the calibration (a single K or one per serial). world_2_cam is OpenCV
world-to-camera; the world is in **metres** (NeRSemble's scene box and FLAME are metric), which is already the
pipeline's unit (`base.py`), so nothing is rescaled (Ava-256's reader converts from millimetres instead).
v2's K is scaled from 2200 x 3208 to the decoded frame size (x W/2200, y H/3208).

Subjects are the participant folders (``"018"``); sequences are the segments; a sequence's frames restart at
0, so frame ids are ``sequence_number * 100000 + t`` with a fixed number per sequence name (the official
order of `SEQUENCE_NAMES`, unknown names after it), stable whatever subset a run selects.

The timeline of a sequence is the rows of its FLAME tracking when the head pose comes from it, else the
frame count of its first camera's video. Frames are decoded on demand through imageio's ffmpeg plugin; one
decoder per video stays open (an LRU of `max_open_videos`), so reading a video's frames in order decodes each
frame once (the plugin reads the next frame, skips up to 100 forward, and seeks otherwise).

Head pose: from the FLAME tracking when present (rigid ``[R | t]``, the scale folded into the head-local
frame, see `expressions.BenchmarkTracking`); otherwise a static "rig" head frame: +z towards the mean
camera, +y the cameras' mean up, origin at the head centre (`capture.nersemble.head_center`, world metres, or
estimated from the first frame's silhouettes, see `estimate_head_center`). NeRSemble ships no tracked mesh
and this reader runs no FLAME model: `tracked_mesh` is a head-sized box around the head centre, enough for
the capture index's head centre; position maps need `positions.backend: dust3r`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from avat3r_core.capture.base import CaptureReader, Frame, check_camera_matrices
from avat3r_core.capture.expressions import BenchmarkTracking, load_benchmark_tracking
from avat3r_core.errors import CaptureError, ConfigError, MissingImageError
from avat3r_core.geometry.cameras import Camera

log = logging.getLogger(__name__)

NATIVE_WIDTH = 2200
NATIVE_HEIGHT = 3208
"""v2 intrinsics are for the full 2200 (W) x 3208 (H) portrait frame."""
SERIALS = (
    "222200042", "222200044", "222200046", "222200040", "222200036", "222200048", "220700191", "222200041",
    "222200037", "222200038", "222200047", "222200043", "222200049", "222200039", "222200045", "221501007",
)  # fmt: skip
"""The 16 NeRSemble camera serials (`constants.SERIALS`); the reader takes whatever the calibration lists."""
BACKGROUND = "BACKGROUND"
SEQUENCE_NAMES = (
    BACKGROUND, "GLASSES", "EXP-1-head", "EXP-2-eyes", "EXP-3-cheeks+nose", "EXP-4-lips", "EXP-5-mouth",
    "EXP-6-tongue-1", "EXP-7-tongue-2", "EXP-8-jaw-1", "EXP-9-jaw-2", "HAIR", "FREE", "EMO-1-shout+laugh",
    "EMO-2-surprise+fear", "EMO-3-angry+sad", "EMO-4-disgust+happy", "SEN-01-cramp_small_danger",
    "SEN-02-same_phrase_thirty_times", "SEN-03-pluck_bright_rose", "SEN-04-two_plus_seven",
    "SEN-05-glow_eyes_sweet_girl", "SEN-06-problems_wise_chief", "SEN-07-fond_note_fried",
    "SEN-08-clothes_and_lodging", "SEN-09-frown_events_bad", "SEN-10-port_strong_smokey",
)  # fmt: skip
"""v2 sequence names in the official order (`nersemble-data:constants.SEQUENCE_NAMES`)."""
FRAME_BLOCK = 100_000
"""Frame ids are sequence_number * FRAME_BLOCK + t (a sequence has far fewer frames)."""
CALIBRATION = "calibration/camera_params.json"
TRACKING_FILES = ("flame2023_tracking_v2.npz", "flame2023_tracking.npz")
"""Under sequences/{SEQ}/tracking/: the v2 tracking, else the benchmark's first release."""
HEAD_BOX = (0.20, 0.26, 0.24)
"""Size (x, y, z) in metres of the proxy head box `tracked_mesh` returns (a head with hair, roughly)."""
HEAD_HEIGHT = 0.25
"""Metres from the top of the hair to the chin, used to find the head in a silhouette."""
_SUBJECT = re.compile(r"^\d+$")
_VIDEO = re.compile(r"^cam_(?P<serial>[A-Za-z0-9]+)\.mp4$")


# -- naming ---------------------------------------------------------------------------------------------
def sequence_number(name: str, present: list[str] | tuple[str, ...] = ()) -> int:
    """The fixed number of a sequence: 1 + its official index; a name outside the official list gets
    1000 + its rank among the unofficial names in `present` (the subject's sequence folders)."""
    if name in SEQUENCE_NAMES:
        return SEQUENCE_NAMES.index(name) + 1
    unofficial = sorted({p for p in present if p not in SEQUENCE_NAMES} | {name})
    return 1000 + unofficial.index(name)


def frame_id(number: int, t: int) -> int:
    return number * FRAME_BLOCK + t


def discover_nersemble_subjects(root: str | Path) -> list[str]:
    """Participant folders (digits) with a calibration, sorted numerically."""
    root = Path(root)
    if not root.is_dir():
        raise CaptureError("capture root does not exist", file=root)
    found = [p.name for p in root.iterdir() if _SUBJECT.match(p.name) and (p / CALIBRATION).is_file()]
    if not found:
        raise CaptureError(f"no {{participant}}/{CALIBRATION} folders (NeRSemble layout)", file=root)
    return sorted(found, key=lambda name: (int(name), name))


# -- video decoding -----------------------------------------------------------------------------------------
class VideoEndError(Exception):
    """A frame index past the end of a video."""


class VideoCache:
    """Open imageio ffmpeg readers, least recently used closed first; exact frame counts cached."""

    def __init__(self, max_open: int = 32) -> None:
        self.max_open = max(1, int(max_open))
        self._readers: collections.OrderedDict[Path, Any] = collections.OrderedDict()
        self._counts: dict[Path, int] = {}

    def _reader(self, path: Path) -> Any:
        if path in self._readers:
            self._readers.move_to_end(path)
            return self._readers[path]
        import imageio.v2 as imageio

        reader = imageio.get_reader(path, format="ffmpeg")  # type: ignore[arg-type]
        self._readers[path] = reader
        while len(self._readers) > self.max_open:
            _, oldest = self._readers.popitem(last=False)
            oldest.close()
        return reader

    def _drop(self, path: Path) -> None:
        reader = self._readers.pop(path, None)
        if reader is not None:
            with contextlib.suppress(Exception):  # a dead ffmpeg pipe; nothing left to release
                reader.close()

    def size(self, path: Path) -> tuple[int, int]:
        """(height, width) of the decoded frames."""
        width, height = self._reader(path).get_meta_data()["size"]
        return int(height), int(width)

    def frame(self, path: Path, index: int) -> np.ndarray:
        try:
            frame = self._reader(path).get_data(index)
        except (IndexError, StopIteration, RuntimeError) as exc:
            self._drop(path)  # the pipe ended: a later read starts a fresh decoder
            raise VideoEndError(str(exc) or type(exc).__name__) from None
        return np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)[..., :3])

    def count(self, path: Path) -> int:
        """Exact frame count (ffmpeg copies the stream without decoding it)."""
        if path not in self._counts:
            import imageio_ffmpeg

            self._counts[path] = int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])
        return self._counts[path]

    def close(self) -> None:
        for path in list(self._readers):
            self._drop(path)


# -- head centre from silhouettes -----------------------------------------------------------------------
def _closest_point(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares point closest to the lines origin + s * direction (directions unit)."""
    eye = np.eye(3)
    projectors = eye[None] - directions[:, :, None] * directions[:, None, :]
    return np.linalg.solve(projectors.sum(0), np.einsum("nij,nj->i", projectors, origins))


def estimate_head_center(
    cameras: dict[str, Camera], silhouettes: dict[str, np.ndarray], head_height: float = HEAD_HEIGHT
) -> np.ndarray:
    """World head centre (metres) from one frame's foreground silhouettes of several calibrated cameras.

    The rig's cameras aim at the head, so the point nearest to all optical axes gives each camera's depth
    to the head; the head then spans about ``fy * head_height / depth`` rows below the topmost foreground
    row (upright cameras: image y down = world down, true of NeRSemble and the synthetic rig). The centroid
    of the foreground in that band (shoulders excluded) defines a ray per camera, and the point nearest to
    all rays is the head centre. Accurate to a few centimetres (hair moves it up); the crop's margin covers
    that. Raises ValueError when fewer than two cameras see a foreground.
    """
    ids = [cam for cam in sorted(silhouettes) if cam in cameras]
    axes_o = np.stack([cameras[c].center for c in ids])
    axes_d = np.stack([cameras[c].forward for c in ids])
    aim = _closest_point(axes_o, axes_d)
    origins, directions = [], []
    for cam in ids:
        camera, mask = cameras[cam], np.asarray(silhouettes[cam]) > 0
        rows = np.flatnonzero(mask.sum(1) >= max(2, mask.shape[1] // 200))
        if len(rows) == 0:
            continue
        depth = float((camera.R @ aim + camera.t)[2])
        if depth <= 0:
            continue
        band = math.ceil(camera.K[1, 1] * head_height / depth)
        top = rows[0]
        ii, jj = np.nonzero(mask[top : top + band])
        if len(ii) == 0:
            continue
        pixel = np.array([jj.mean() + 0.5, ii.mean() + top + 0.5, 1.0])
        ray = camera.R.T @ np.linalg.solve(camera.K, pixel)
        origins.append(camera.center)
        directions.append(ray / np.linalg.norm(ray))
    if len(origins) < 2:
        raise ValueError("fewer than two cameras see a foreground")
    return _closest_point(np.stack(origins), np.stack(directions))


def rig_rotation(cameras: dict[str, Camera], center: np.ndarray) -> np.ndarray:
    """Head-to-world rotation of a head facing the rig: +z towards the mean camera direction, +y the
    cameras' mean up (their -y image axis), +x completing a right-handed frame (FLAME's axes)."""
    to_cams = np.stack([c.center - center for c in cameras.values()])
    z = (to_cams / np.linalg.norm(to_cams, axis=1, keepdims=True)).mean(0)
    z /= np.linalg.norm(z)
    up = -np.stack([c.R[1] for c in cameras.values()]).mean(0)
    y = up - z * (up @ z)
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z], axis=1)


def _orthonormalised(rotation: np.ndarray) -> np.ndarray:
    """Nearest rotation (polar decomposition): calibrations stored from float32 are off by ~1e-7."""
    u, _, vt = np.linalg.svd(rotation)
    return u @ vt


# -- the reader ----------------------------------------------------------------------------------------------
class NeRSembleCapture(CaptureReader):
    """One NeRSemble participant (v2 or benchmark layout); metres, OpenCV axes, K at the decoded size."""

    dataset = "nersemble"

    def __init__(
        self,
        root: str | Path,
        subject: str,
        *,
        sequences: list[str] | None = None,
        cameras: list[str] | None = None,
        head_center: list[float] | None = None,
        head_pose: str = "auto",
        max_open_videos: int = 32,
    ) -> None:
        super().__init__(subject)
        self.root = Path(root)
        self.folder = self.root / subject
        if not self.folder.is_dir():
            raise CaptureError("participant folder does not exist", subject=subject, file=self.folder)
        self.calibration_path = self.folder / CALIBRATION
        self.wanted_sequences = list(sequences or [])
        self.wanted_cameras = list(cameras or [])
        self.head_center_config = None if head_center is None else np.asarray(head_center, dtype=np.float64)
        if head_pose not in ("auto", "tracking", "rig"):
            raise ConfigError("capture.nersemble.head_pose", f"auto, tracking or rig, got {head_pose!r}")
        self.head_pose_mode = head_pose
        self.videos = VideoCache(max_open_videos)

    def close(self) -> None:
        self.videos.close()

    # -- calibration ----------------------------------------------------------------------------------
    @cached_property
    def _calibration(self) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """(layout, serial -> (K as stored, w2c metres))."""
        path = self.calibration_path
        try:
            data = json.loads(path.read_text())
            intrinsics, w2c_all = data["intrinsics"], data["world_2_cam"]
        except FileNotFoundError:
            raise CaptureError("missing camera calibration", subject=self.subject, file=path) from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CaptureError(
                f"unreadable camera calibration: {exc!r}", subject=self.subject, file=path
            ) from None
        layout = "benchmark" if isinstance(intrinsics, dict) else "v2"
        out = {}
        for serial, pose in w2c_all.items():
            serial = str(serial)
            try:
                K = np.asarray(intrinsics[serial] if layout == "benchmark" else intrinsics, dtype=np.float64)
                w2c = np.asarray(pose, dtype=np.float64)
            except KeyError:
                raise CaptureError(
                    "camera has extrinsics but no intrinsics", subject=self.subject, camera=serial, file=path
                ) from None
            except (TypeError, ValueError) as exc:
                raise CaptureError(
                    f"bad calibration entry: {exc}", subject=self.subject, camera=serial, file=path
                ) from None
            check_camera_matrices(
                K,
                w2c,
                "intrinsics must be 3x3 and world_2_cam 4x4",
                subject=self.subject,
                camera=serial,
                file=path,
            )
            error = float(np.abs(w2c[:3, :3] @ w2c[:3, :3].T - np.eye(3)).max())
            if error > 1e-3:
                raise CaptureError(
                    f"world_2_cam rotation is not orthonormal (error {error:.2g})",
                    subject=self.subject,
                    camera=serial,
                    file=path,
                )
            if error > 1e-9:
                w2c[:3, :3] = _orthonormalised(w2c[:3, :3])
            out[serial] = (K, w2c)
        if not out:
            raise CaptureError("calibration lists no cameras", subject=self.subject, file=path)
        return layout, out

    @property
    def layout(self) -> str:
        """The layout: "v2" (shared K, clean plates) or "benchmark" (per-camera K, alpha videos,
        FLAME tracking)."""
        return self._calibration[0]

    def _require_camera(self, camera: str, frame: int | None = None) -> None:
        if camera not in self._calibration[1]:
            raise CaptureError(
                "camera serial is not in the calibration",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=self.calibration_path,
            )

    # -- sequences, videos and the timeline ---------------------------------------------------------------
    def video_path(self, sequence: str, camera: str, kind: str = "images") -> Path:
        return self.folder / "sequences" / sequence / kind / f"cam_{camera}.mp4"

    def tracking_path(self, sequence: str) -> Path:
        """The sequence's FLAME tracking file (v2 name, else the first release's; may not exist)."""
        folder = self.folder / "sequences" / sequence / "tracking"
        for name in TRACKING_FILES:
            if (folder / name).is_file():
                return folder / name
        return folder / TRACKING_FILES[0]

    def input_files(self) -> list[Path]:
        """Every file the reader may read for this subject, for the DAG's rule inputs: the calibration, the
        selected sequences' videos (images, alpha maps) and FLAME tracking, and the clean plates. Replacing
        one of them reruns this subject's jobs only (rules/common.smk capture_input)."""
        files = [self.calibration_path]
        for sequence in self.sequences:
            folder = self.folder / "sequences" / sequence
            for kind in ("images", "alpha_maps"):
                files += sorted((folder / kind).glob("cam_*.mp4"))
            files += [p for p in [self.tracking_path(sequence)] if p.is_file()]
        files += sorted((self.folder / "sequences" / BACKGROUND).glob("image_*.jpg"))
        if self.wanted_cameras:
            wanted = {f"cam_{c}.mp4" for c in self.wanted_cameras} | {
                f"image_{c}.jpg" for c in self.wanted_cameras
            }
            files = [p for p in files if p.suffix not in (".mp4", ".jpg") or p.name in wanted]
        return files

    @cached_property
    def sequences(self) -> list[str]:
        """Selected sequences in the official order (config `capture.nersemble.sequences`, else all)."""
        folder = self.folder / "sequences"
        present = (
            sorted(p.name for p in folder.iterdir() if p.name != BACKGROUND and (p / "images").is_dir())
            if folder.is_dir()
            else []
        )
        if self.wanted_sequences:
            unknown = [s for s in self.wanted_sequences if s not in present]
            if unknown:
                raise CaptureError(
                    f"sequence(s) not in the capture: {', '.join(unknown)} "
                    "(config capture.nersemble.sequences)",
                    subject=self.subject,
                    file=folder,
                )
            present = [s for s in present if s in self.wanted_sequences]
        if not present:
            raise CaptureError("no sequences/{SEQ}/images/ folders", subject=self.subject, file=folder)
        return sorted(present, key=self._number)

    def _number(self, sequence: str) -> int:
        folder = self.folder / "sequences"
        return sequence_number(sequence, [p.name for p in folder.iterdir()] if folder.is_dir() else [])

    @cached_property
    def _numbers(self) -> dict[str, int]:
        return {s: self._number(s) for s in self.sequences}

    def _video_serials(self, sequence: str) -> list[str]:
        folder = self.folder / "sequences" / sequence / "images"
        return sorted(m["serial"] for m in (_VIDEO.match(p.name) for p in folder.iterdir()) if m)

    @cached_property
    def _camera_ids(self) -> list[str]:
        calibrated = self._calibration[1]
        if self.wanted_cameras:
            for camera in self.wanted_cameras:
                self._require_camera(camera)
            candidates = list(self.wanted_cameras)
        else:
            candidates = list(calibrated)
        with_video = {s for seq in self.sequences for s in self._video_serials(seq)}
        kept = sorted(c for c in candidates if c in with_video)
        dropped = sorted(set(candidates) - set(kept))
        if dropped:
            log.info(
                "subject %s: calibrated cameras without any video are left out: %s", self.subject, dropped
            )
        if not kept:
            raise CaptureError("no calibrated camera has a video", subject=self.subject, file=self.folder)
        return kept

    @cached_property
    def _trackings(self) -> dict[str, BenchmarkTracking]:
        """FLAME tracking per sequence when the head pose comes from it (config head_pose)."""
        if self.head_pose_mode == "rig":
            return {}
        present = {s: self.tracking_path(s) for s in self.sequences if self.tracking_path(s).is_file()}
        if self.head_pose_mode == "tracking" and len(present) < len(self.sequences):
            missing = [s for s in self.sequences if s not in present]
            raise CaptureError(
                f"capture.nersemble.head_pose is 'tracking' but sequence(s) {', '.join(missing)} have no "
                "FLAME tracking",
                subject=self.subject,
                file=self.tracking_path(missing[0]),
            )
        if len(present) < len(self.sequences):
            if present:
                log.warning(
                    "subject %s: only %d of %d sequences have FLAME tracking; using the static rig head "
                    "frame for all (set capture.nersemble.sequences to the tracked ones to use it)",
                    self.subject,
                    len(present),
                    len(self.sequences),
                )
            return {}
        return {s: load_benchmark_tracking(p) for s, p in present.items()}

    def _length(self, sequence: str) -> tuple[int, str]:
        """(frames in the sequence's timeline, what defined it)."""
        if sequence in self._trackings:
            tracking = self._trackings[sequence]
            return len(tracking), f"FLAME tracking {tracking.path}"
        serials = [s for s in self._video_serials(sequence) if s in self._camera_ids]
        if not serials:
            raise CaptureError(
                "no video of a selected camera",
                subject=self.subject,
                file=self.folder / "sequences" / sequence,
            )
        path = self.video_path(sequence, serials[0])
        return self.videos.count(path), f"video {path}"

    @cached_property
    def _frames(self) -> list[Frame]:
        frames = []
        for sequence in self.sequences:
            n, _ = self._length(sequence)
            number = self._numbers[sequence]
            frames.extend(Frame(frame_id(number, t), sequence) for t in range(n))
        return frames

    @cached_property
    def _frame_set(self) -> set[int]:
        return {f.frame for f in self._frames}

    @cached_property
    def _by_number(self) -> dict[int, str]:
        return {number: sequence for sequence, number in self._numbers.items()}

    def locate(self, frame: int) -> tuple[str, int]:
        """frame id -> (sequence, index of the frame in that sequence's videos)."""
        number, t = divmod(int(frame), FRAME_BLOCK)
        if number not in self._by_number or frame not in self._frame_set:
            raise CaptureError(
                "frame is not in the capture's timeline", subject=self.subject, frame=frame, file=self.folder
            )
        return self._by_number[number], t

    def frames(self) -> list[Frame]:
        return self._frames

    # -- cameras -----------------------------------------------------------------------------------------
    @cached_property
    def _image_size(self) -> tuple[int, int]:
        """(height, width) read off the first video of a selected camera (every video has that size)."""
        for sequence in self.sequences:
            serial = next((s for s in self._video_serials(sequence) if s in self._camera_ids), None)
            if serial is not None:
                break
        path = self.video_path(sequence, serial)
        try:
            return self.videos.size(path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CaptureError(
                f"unreadable video: {exc}", subject=self.subject, camera=serial, file=path
            ) from None

    def image_size(self) -> tuple[int, int]:
        return self._image_size

    @cached_property
    def _cameras(self) -> dict[str, Camera]:
        height, width = self.image_size()
        layout, calibration = self._calibration
        cameras = {}
        for serial in self._camera_ids:
            K, w2c = calibration[serial]
            try:
                if layout == "v2" or K[0, 2] > width or K[1, 2] > height:
                    # v2: K of the full 2200 x 3208 frame. A benchmark K whose principal point lies outside
                    # the video is taken as full-frame too (the benchmark's K are at video resolution).
                    camera = Camera(K=K, w2c=w2c, width=NATIVE_WIDTH, height=NATIVE_HEIGHT).scaled_to(
                        width, height
                    )
                else:
                    camera = Camera(K=K, w2c=w2c, width=width, height=height)
            except ValueError as exc:
                raise CaptureError(
                    str(exc), subject=self.subject, camera=serial, file=self.calibration_path
                ) from None
            cameras[serial] = camera
        return cameras

    def cameras(self) -> dict[str, Camera]:
        return self._cameras

    def uncalibrated_cameras(self) -> list[str]:
        """Serials with videos in the selected sequences but no calibration (ignored, reported)."""
        calibrated = self._calibration[1]
        return sorted({s for seq in self.sequences for s in self._video_serials(seq)} - set(calibrated))

    # -- pixels ---------------------------------------------------------------------------------------------
    def has_image(self, camera: str, frame: int) -> bool:
        if camera not in self._calibration[1] or frame not in self._frame_set:
            return False
        sequence, _ = self.locate(frame)
        return self.video_path(sequence, camera).is_file()

    def missing_images(self) -> list[tuple[str, int]]:
        """Frames of cameras without a video in a sequence; a video shorter than its sequence's timeline
        is an error (a truncated download), found here by counting every video's frames once."""
        missing = []
        for sequence in self.sequences:
            n, source = self._length(sequence)
            number = self._numbers[sequence]
            for camera in self.camera_ids:
                path = self.video_path(sequence, camera)
                if not path.is_file():
                    missing.extend((camera, frame_id(number, t)) for t in range(n))
                    continue
                count = self.videos.count(path)
                if count < n:
                    raise CaptureError(
                        f"video has {count} frames, the timeline of sequence {sequence} has {n} "
                        f"(from {source})",
                        subject=self.subject,
                        camera=camera,
                        frame=frame_id(number, count),
                        file=path,
                    )
        return missing

    def _decode(self, camera: str, frame: int, kind: str) -> np.ndarray:
        self._require_camera(camera, frame)
        sequence, t = self.locate(frame)
        path = self.video_path(sequence, camera, kind)
        if not path.is_file():
            if kind == "images":
                raise MissingImageError(
                    "no video for this camera and sequence",
                    subject=self.subject,
                    camera=camera,
                    frame=frame,
                    file=path,
                )
            raise CaptureError(
                f"missing {kind} video", subject=self.subject, camera=camera, frame=frame, file=path
            )
        try:
            pixels = self.videos.frame(path, t)
        except VideoEndError:
            raise CaptureError(
                f"video ends before frame index {t} of sequence {sequence} (it has {self.videos.count(path)} "
                "frames; truncated?)",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=path,
            ) from None
        except OSError as exc:
            raise CaptureError(
                f"unreadable video: {exc}", subject=self.subject, camera=camera, frame=frame, file=path
            ) from None
        return self.checked_size(pixels, "frame", camera, frame, path)

    def image(self, camera: str, frame: int) -> np.ndarray:
        return self._decode(camera, frame, "images")

    def mask(self, camera: str, frame: int) -> np.ndarray:
        if self.layout == "v2":
            raise CaptureError(
                "NeRSemble v2 ships no foreground masks: use matting.backend plate_difference or bgmv2",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=self.folder,
            )
        return self._decode(camera, frame, "alpha_maps")[..., 0].copy()

    def background(self, camera: str) -> np.ndarray:
        self._require_camera(camera)
        height, width = self.image_size()
        if self.layout == "benchmark":
            # The benchmark's videos are already composited over a uniform colour (white in the removed
            # apply_alpha_map code); the "plate" is that colour, read where the first frame's alpha is 0.
            frame = self._frames[0].frame
            pixels, alpha = self.image(camera, frame), self.mask(camera, frame)
            outside = pixels[alpha < 8]
            colour = np.median(outside, axis=0) if len(outside) else np.full(3, 255.0)
            return np.broadcast_to(colour.round().astype(np.uint8), (height, width, 3)).copy()
        path = self.folder / "sequences" / BACKGROUND / f"image_{camera}.jpg"
        try:
            with Image.open(path) as image:
                plate = image.convert("RGB")
                if plate.size != (width, height):  # plates may be stored at another resolution
                    plate = plate.resize((width, height), Image.Resampling.BILINEAR)
                return np.asarray(plate).copy()
        except FileNotFoundError:
            raise CaptureError(
                "missing background plate", subject=self.subject, camera=camera, file=path
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            raise CaptureError(
                f"corrupt background plate: {exc}", subject=self.subject, camera=camera, file=path
            ) from None

    # -- head ------------------------------------------------------------------------------------------------
    @property
    def uses_tracking(self) -> bool:
        return bool(self._trackings)

    def silhouette(self, camera: str, frame: int) -> np.ndarray:
        """Foreground of one image for the head-centre estimate: the alpha video (benchmark), else a crude
        plate difference (any channel differs by more than 30 levels)."""
        if self.layout == "benchmark":
            return self.mask(camera, frame) > 127
        diff = np.abs(self.image(camera, frame).astype(np.int16) - self.background(camera).astype(np.int16))
        return diff.max(axis=-1) > 30

    @cached_property
    def head_center_world(self) -> np.ndarray:
        """World head centre at the first frame: config `capture.nersemble.head_center`, else estimated."""
        if self.head_center_config is not None:
            return self.head_center_config
        frame = self._frames[0].frame
        silhouettes = {c: self.silhouette(c, frame) for c in self.camera_ids if self.has_image(c, frame)}
        try:
            return estimate_head_center(self.cameras(), silhouettes)
        except ValueError as exc:
            raise CaptureError(
                f"cannot estimate the head centre ({exc}); set capture.nersemble.head_center",
                subject=self.subject,
                frame=frame,
            ) from None

    @cached_property
    def _rig_pose(self) -> np.ndarray:
        center = self.head_center_world
        out = np.eye(4)
        out[:3, :3] = rig_rotation(self.cameras(), center)
        out[:3, 3] = center
        return out

    def head_pose(self, frame: int) -> np.ndarray:
        sequence, t = self.locate(frame)
        if not self._trackings:
            return self._rig_pose.copy()
        return self._trackings[sequence].head_to_world(t)

    def flame_model_to_world(self, frame: int) -> np.ndarray:
        """The tracking's ``[s R | t]`` (FLAME model space to world) of a frame, for a FLAME mesh."""
        sequence, t = self.locate(frame)
        if sequence not in self._trackings:
            raise CaptureError(
                "no FLAME tracking used for this sequence",
                subject=self.subject,
                frame=frame,
                file=self.tracking_path(sequence),
            )
        return self._trackings[sequence].model_to_world(t)

    @cached_property
    def head_center_local(self) -> np.ndarray:
        """The head centre in the head-local frame (metres)."""
        if not self._trackings:
            return np.zeros(3)
        first = self.head_pose(self._frames[0].frame)
        return first[:3, :3].T @ (self.head_center_world - first[:3, 3])

    def tracked_mesh(self, frame: int) -> np.ndarray:
        """A proxy, not a tracked mesh: the 8 corners of a head-sized box around the head centre (head-local
        metres), whose bounding-box centre is what the capture index needs."""
        self.locate(frame)
        half = np.asarray(HEAD_BOX) / 2
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return self.head_center_local + corners * half

    def mesh_faces(self) -> np.ndarray:
        raise CaptureError(
            "NeRSemble has no tracked mesh (this reader runs no FLAME model): use positions.backend dust3r",
            subject=self.subject,
            file=self.folder,
        )

    def expression_code(self, frame: int) -> np.ndarray:
        raise ConfigError(
            "capture.expression_source",
            "NeRSemble has no Ava-256 latent codes: use flame_nersemble (benchmark tracking) or "
            "flame_gagavatar",
        )


def open_nersemble(capture: dict[str, Any], subject: str) -> NeRSembleCapture:
    """A reader from the `capture` config section (its `nersemble` sub-section holds the knobs)."""
    knobs = dict(capture.get("nersemble") or {})
    return NeRSembleCapture(
        capture["root"],
        subject,
        sequences=knobs.get("sequences") or None,
        cameras=knobs.get("cameras") or None,
        head_center=knobs.get("head_center"),
        head_pose=knobs.get("head_pose", "auto"),
        max_open_videos=knobs.get("max_open_videos", 32),
    )

"""Reader for the Ava-256 4TB release layout (and the synthetic capture, which writes the same bytes).

Layout per subject (see shared/reference/datasets.md): `{mcd}--{mct}--{sid}/decoder/` with
`camera_calibration.json` (K and T stored transposed, millimetres, K for the native 4096x2668 sensor),
`frame_list.csv`, and zips of head poses, tracked meshes, images, clean plates and masks. Everything is
read lazily from the zips: a subject has 80 cameras x ~5000 frames, and a stage touches only what it needs.
The reader converts to metres and scales K to the resolution of the images actually shipped.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from plyfile import PlyData

from avat3r_core.capture.base import CaptureReader, Frame, check_camera_matrices
from avat3r_core.errors import CaptureError, ConfigError, MissingImageError
from avat3r_core.geometry.cameras import Camera

NATIVE_HEIGHT = 4096
NATIVE_WIDTH = 2668
MM_TO_M = 1e-3
SUBJECTS_CSV = "256_ids.csv"
TOPOLOGY_OBJ = "face_topology.obj"
_FOLDER_PATTERN = re.compile(r"^(?P<mcd>\d+)--(?P<mct>\d+)--(?P<sid>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Ava256Subject:
    """One row of `256_ids.csv`: capture date, capture time and subject id."""

    mcd: str
    mct: str
    sid: str

    @property
    def folder(self) -> str:
        return f"{self.mcd}--{self.mct}--{self.sid}"


def read_subject_list(csv_path: Path) -> list[Ava256Subject]:
    """Parse a subject list with columns mcd,sid,mct (the order ava-256's 256_ids.csv uses)."""
    try:
        with csv_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CaptureError("subject list does not exist", file=csv_path) from None
    if not rows or not {"mcd", "sid", "mct"} <= set(rows[0]):
        raise CaptureError("subject list needs the columns mcd,sid,mct", file=csv_path)
    return [Ava256Subject(row["mcd"].strip(), row["mct"].strip(), row["sid"].strip()) for row in rows]


def discover_subjects(root: Path, subjects_csv: Path | None = None) -> list[Ava256Subject]:
    """The subjects of a capture root: from its subject list, else from the folder names (one listdir)."""
    csv_path = subjects_csv or root / SUBJECTS_CSV
    if subjects_csv is not None or csv_path.exists():
        return read_subject_list(csv_path)
    if not root.is_dir():
        raise CaptureError("capture root does not exist", file=root)
    found = [m for m in (_FOLDER_PATTERN.match(p.name) for p in sorted(root.iterdir())) if m]
    if not found:
        raise CaptureError(f"no {SUBJECTS_CSV} and no {{mcd}}--{{mct}}--{{sid}} folders", file=root)
    return [Ava256Subject(m["mcd"], m["mct"], m["sid"]) for m in found]


def select_subjects(available: list[str], wanted: list[str], max_subjects: int | None) -> list[str]:
    """Apply the config's subset knobs (`capture.subjects`, then `capture.max_subjects`)."""
    if wanted:
        unknown = [sid for sid in wanted if sid not in available]
        if unknown:
            raise ConfigError("capture.subjects", f"not in the capture: {', '.join(unknown)}")
        available = [sid for sid in available if sid in wanted]
    return available[:max_subjects] if max_subjects else available


def read_topology(path: Path) -> np.ndarray:
    """Triangles of an OBJ file (`f v/vt ...`, 1-based); polygons are fanned into triangles."""
    faces: list[list[int]] = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise CaptureError(
            "tracked-mesh topology does not exist (config capture.topology)", file=path
        ) from None
    for line in lines:
        if line.startswith("f "):
            corners = [int(token.split("/")[0]) - 1 for token in line.split()[1:]]
            faces.extend([corners[0], corners[i], corners[i + 1]] for i in range(1, len(corners) - 1))
    if not faces:
        raise CaptureError("topology has no faces", file=path)
    return np.asarray(faces, dtype=np.int64)


class Ava256Capture(CaptureReader):
    """One Ava-256 subject, read lazily; metres, OpenCV axes, K at the shipped image resolution."""

    dataset = "ava256"

    def __init__(
        self,
        root: str | Path,
        subject: str,
        subjects_csv: str | Path | None = None,
        topology: str | Path | None = None,
    ) -> None:
        super().__init__(subject)
        self.root = Path(root)
        entries = {
            s.sid: s for s in discover_subjects(self.root, Path(subjects_csv) if subjects_csv else None)
        }
        if subject not in entries:
            raise CaptureError(
                "subject is not in the capture's subject list", subject=subject, file=self.root
            )
        self.folder = entries[subject].folder
        self.decoder = self.root / self.folder / "decoder"
        if not self.decoder.is_dir():
            raise CaptureError("capture folder does not exist", subject=subject, file=self.decoder)
        self.topology_path = Path(topology) if topology else self.root / TOPOLOGY_OBJ
        self._zips: dict[Path, zipfile.ZipFile] = {}
        self._names: dict[Path, frozenset[str]] = {}

    # -- zip access ----------------------------------------------------------------------------------
    def _zip(self, path: Path) -> zipfile.ZipFile:
        if path not in self._zips:
            try:
                archive = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise CaptureError("missing file", subject=self.subject, file=path) from None
            except (zipfile.BadZipFile, OSError) as exc:
                raise CaptureError(
                    f"not a readable zip (truncated?): {exc}", subject=self.subject, file=path
                ) from None
            self._zips[path] = archive
            self._names[path] = frozenset(archive.namelist())
        return self._zips[path]

    def _member_names(self, path: Path) -> frozenset[str]:
        self._zip(path)
        return self._names[path]

    def _read_member(
        self,
        path: Path,
        member: str,
        *,
        camera: str | None = None,
        frame: int | None = None,
        missing: str | None = None,
    ) -> bytes:
        """A zip member's bytes. An absent member is a MissingImageError (a dropped image, tolerated), or,
        when `missing` names what it is (plate, head pose, mesh), a CaptureError saying so."""
        archive = self._zip(path)
        if member not in self._names[path]:
            if missing is not None:
                raise CaptureError(missing, subject=self.subject, camera=camera, frame=frame, file=path)
            raise MissingImageError(
                f"{member} is not in the zip", subject=self.subject, camera=camera, frame=frame, file=path
            )
        try:
            return archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CaptureError(
                f"cannot read {member} (truncated or corrupt zip): {exc}",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=path,
            ) from None

    def _decode_image(
        self, data: bytes, mode: str, *, camera: str | None, frame: int | None, file: str
    ) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image.convert(mode))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise CaptureError(
                f"corrupt image: {exc}", subject=self.subject, camera=camera, frame=frame, file=file
            ) from None
        return pixels

    # -- calibration and timeline --------------------------------------------------------------------
    @cached_property
    def _calibration(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """camera id -> (K at native sensor resolution, w2c in metres, distortion)."""
        path = self.decoder / "camera_calibration.json"
        try:
            entries = json.loads(path.read_text())["KRT"]
        except FileNotFoundError:
            raise CaptureError("missing camera calibration", subject=self.subject, file=path) from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CaptureError(
                f"unreadable camera calibration: {exc}", subject=self.subject, file=path
            ) from None
        calibration = {}
        for entry in entries:
            camera = str(entry.get("cameraId"))
            try:
                K = np.asarray(entry["K"], dtype=np.float64).T  # stored transposed (column-major)
                w2c = np.asarray(entry["T"], dtype=np.float64).T
                distortion = np.asarray(entry.get("distortion", [0, 0, 0, 0]), dtype=np.float64)
            except (KeyError, ValueError, TypeError) as exc:
                raise CaptureError(
                    f"bad KRT entry: {exc}", subject=self.subject, camera=camera, file=path
                ) from None
            check_camera_matrices(
                K, w2c, "K must be 3x3 and T 4x4", subject=self.subject, camera=camera, file=path
            )
            w2c[:3, 3] *= MM_TO_M
            calibration[camera] = (K, w2c, distortion)
        if not calibration:
            raise CaptureError("camera calibration lists no cameras", subject=self.subject, file=path)
        return calibration

    @cached_property
    def _cameras(self) -> dict[str, Camera]:
        height, width = self.image_size()
        path = self.decoder / "camera_calibration.json"
        cameras = {}
        for camera, (K, w2c, _) in self._calibration.items():
            try:
                native = Camera(K=K, w2c=w2c, width=NATIVE_WIDTH, height=NATIVE_HEIGHT)
            except ValueError as exc:
                raise CaptureError(str(exc), subject=self.subject, camera=camera, file=path) from None
            cameras[camera] = native.scaled_to(width, height)
        return cameras

    def cameras(self) -> dict[str, Camera]:
        return self._cameras

    def distortion(self, camera: str) -> np.ndarray:
        """The 4 radial-tangential coefficients as stored; the release images are already undistorted."""
        return self._calibration[camera][2]

    @cached_property
    def _frames(self) -> list[Frame]:
        path = self.decoder / "frame_list.csv"
        try:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            raise CaptureError("missing frame list", subject=self.subject, file=path) from None
        if not rows or not {"seg_id", "frame_id"} <= set(rows[0]):
            raise CaptureError(
                "frame list needs the columns seg_id,frame_id", subject=self.subject, file=path
            )
        try:
            return [Frame(int(row["frame_id"]), row["seg_id"]) for row in rows]
        except ValueError as exc:
            raise CaptureError(f"bad frame id: {exc}", subject=self.subject, file=path) from None

    def frames(self) -> list[Frame]:
        return self._frames

    def _image_zip(self, camera: str) -> Path:
        return self.decoder / "image" / f"cam{camera}.zip"

    @cached_property
    def _image_size(self) -> tuple[int, int]:
        # The release resolution is not in the calibration: read it off the first image that exists.
        for camera in sorted(self._calibration):
            path = self._image_zip(camera)
            if not path.exists():
                continue
            names = sorted(n for n in self._member_names(path) if n.endswith(".avif"))
            if names:
                data = self._read_member(path, names[0], camera=camera)
                height, width = self._decode_image(
                    data, "RGB", camera=camera, frame=None, file=f"{path}:{names[0]}"
                ).shape[:2]
                return height, width
        raise CaptureError(
            "no images found in image/cam*.zip", subject=self.subject, file=self.decoder / "image"
        )

    def image_size(self) -> tuple[int, int]:
        return self._image_size

    # -- pixels ----------------------------------------------------------------------------------------
    def has_image(self, camera: str, frame: int) -> bool:
        path = self._image_zip(camera)
        return path.exists() and f"cam{camera}/{frame:06d}.avif" in self._member_names(path)

    def image(self, camera: str, frame: int) -> np.ndarray:
        self._require_camera(camera)
        path = self._image_zip(camera)
        member = f"cam{camera}/{frame:06d}.avif"
        data = self._read_member(path, member, camera=camera, frame=frame)
        where = f"{path}:{member}"
        pixels = self._decode_image(data, "RGB", camera=camera, frame=frame, file=where)
        return self.checked_size(pixels, "image", camera, frame, where)

    def background(self, camera: str) -> np.ndarray:
        self._require_camera(camera)
        path = self.decoder / "background_image" / "background_image.zip"
        member = f"{camera}.avif"
        data = self._read_member(path, member, camera=camera, missing="missing background plate")
        where = f"{path}:{member}"
        return self.checked_size(
            self._decode_image(data, "RGB", camera=camera, frame=None, file=where),
            "plate",
            camera,
            None,
            where,
        )

    def mask(self, camera: str, frame: int) -> np.ndarray:
        self._require_camera(camera)
        path = self.decoder / "foreground_masks" / f"cam{camera}.zip"
        member = f"{frame:06d}.avif"
        data = self._read_member(path, member, camera=camera, frame=frame)
        where = f"{path}:{member}"
        return self.checked_size(
            self._decode_image(data, "L", camera=camera, frame=frame, file=where),
            "mask",
            camera,
            frame,
            where,
        )

    def missing_images(self) -> list[tuple[str, int]]:
        """Dropped images from the zip directories alone (no decoding): 80 namelists per subject."""
        missing = []
        for camera in self.camera_ids:
            path = self._image_zip(camera)
            names = self._member_names(path) if path.exists() else frozenset()
            missing.extend(
                (camera, item.frame)
                for item in self.frames()
                if f"cam{camera}/{item.frame:06d}.avif" not in names
            )
        return missing

    def uncalibrated_cameras(self) -> list[str]:
        """Image zips of cameras the calibration does not list (one listdir)."""
        folder = self.decoder / "image"
        names = sorted(p.name for p in folder.glob("cam*.zip")) if folder.is_dir() else []
        return [name[3:-4] for name in names if name[3:-4] not in self._calibration]

    def _require_camera(self, camera: str) -> None:
        if camera not in self._calibration:
            raise CaptureError(
                "camera is not in the calibration",
                subject=self.subject,
                camera=camera,
                file=self.decoder / "camera_calibration.json",
            )

    # -- head --------------------------------------------------------------------------------------------
    def head_pose(self, frame: int) -> np.ndarray:
        path = self.decoder / "head_pose" / "head_pose.zip"
        member = f"{frame:06d}.txt"
        data = self._read_member(path, member, frame=frame, missing="missing head pose")
        try:
            pose = np.loadtxt(io.StringIO(data.decode()), dtype=np.float64)
        except ValueError as exc:
            raise CaptureError(
                f"unreadable head pose: {exc}", subject=self.subject, frame=frame, file=f"{path}:{member}"
            ) from None
        if pose.shape != (3, 4) or not np.isfinite(pose).all():
            raise CaptureError(
                "head pose must be a finite 3x4 matrix (NaN or wrong shape)",
                subject=self.subject,
                frame=frame,
                file=f"{path}:{member}",
            )
        out = np.eye(4)
        out[:3, :4] = pose
        out[:3, 3] *= MM_TO_M
        return out

    def tracked_mesh(self, frame: int) -> np.ndarray:
        path = self.decoder / "kinematic_tracking" / "registration_vertices.zip"
        member = f"{frame:06d}.ply"
        data = self._read_member(path, member, frame=frame, missing="missing tracked mesh")
        try:
            vertex = PlyData.read(io.BytesIO(data))["vertex"]
            vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
        except Exception as exc:  # plyfile raises a variety of types on corrupt input
            raise CaptureError(
                f"unreadable PLY: {exc}", subject=self.subject, frame=frame, file=f"{path}:{member}"
            ) from None
        return vertices * MM_TO_M

    def mesh_frames(self) -> set[int]:
        """Frames that have a tracked mesh (from the zip directory, no decoding)."""
        path = self.decoder / "kinematic_tracking" / "registration_vertices.zip"
        return {int(name[:-4]) for name in self._member_names(path) if name.endswith(".ply")}

    @cached_property
    def _faces(self) -> np.ndarray:
        return read_topology(self.topology_path)

    def mesh_faces(self) -> np.ndarray:
        return self._faces

    @cached_property
    def _expression_codes(self) -> dict[int, np.ndarray]:
        path = self.decoder / "expression_codes" / "aeparams_1440000.pkl"
        try:
            with path.open("rb") as handle:
                # The release ships a pickle; only open captures you trust (as with any pickle).
                codes = pickle.load(handle)
        except FileNotFoundError:
            raise CaptureError("missing expression codes", subject=self.subject, file=path) from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as exc:
            raise CaptureError(
                f"unreadable expression codes: {exc}", subject=self.subject, file=path
            ) from None
        # Whether the release keys are str or int is unverified: accept both.
        return {int(key): np.asarray(value, dtype=np.float32).reshape(-1) for key, value in codes.items()}

    def expression_code(self, frame: int) -> np.ndarray:
        try:
            return self._expression_codes[frame]
        except KeyError:
            path = self.decoder / "expression_codes" / "aeparams_1440000.pkl"
            raise CaptureError(
                "no expression code for this frame", subject=self.subject, frame=frame, file=path
            ) from None

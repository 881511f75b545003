"""The one interface every capture reader implements.

Stages only talk to a `CaptureReader`, so a second dataset (NeRSemble: one video per camera and sequence
instead of zips of images and segments) only needs a reader, not changes to the stages. Frames are integers
unique within a subject; a dataset whose frames restart per sequence maps them to unique integers.
Everything a reader returns is in metres, OpenCV camera axes, and pixel units of the images it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from avat3r_core.errors import CaptureError
from avat3r_core.geometry.cameras import Camera


def check_camera_matrices(
    K: np.ndarray, w2c: np.ndarray, what: str, *, subject: str, camera: str, file: object
) -> None:
    """CaptureError naming the camera and file unless K is 3x3, w2c 4x4 and both finite (every reader's
    calibration check; `what` names the two matrices as the file calls them)."""
    if K.shape != (3, 3) or w2c.shape != (4, 4) or not (np.isfinite(K).all() and np.isfinite(w2c).all()):
        raise CaptureError(f"{what}, all finite", subject=subject, camera=camera, file=file)


@dataclass(frozen=True)
class Frame:
    """A timestep of a capture and the segment (Ava-256) or sequence (NeRSemble) it belongs to."""

    frame: int
    segment: str


class CaptureReader(ABC):
    """Lazy access to one subject of a multi-view head capture."""

    dataset: str
    expression_source: str = "ava256"
    """Where `expression_code` comes from (`capture.expressions.EXPRESSION_SOURCES`); set by
    `open_capture` from `capture.expression_source`."""

    def __init__(self, subject: str) -> None:
        self.subject = subject

    # -- calibration and timeline ------------------------------------------------------------------
    @abstractmethod
    def cameras(self) -> dict[str, Camera]:
        """World cameras (metres) at the resolution of the images `image` returns, by camera id."""

    @abstractmethod
    def frames(self) -> list[Frame]:
        """All timesteps in capture order."""

    @abstractmethod
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image and plate of this subject."""

    @cached_property
    def camera_ids(self) -> list[str]:
        return sorted(self.cameras())

    def segments(self) -> dict[str, list[int]]:
        """Frame ids per segment, in capture order."""
        out: dict[str, list[int]] = {}
        for item in self.frames():
            out.setdefault(item.segment, []).append(item.frame)
        return out

    def checked_size(
        self, pixels: np.ndarray, what: str, camera: str, frame: int | None, file: object
    ) -> np.ndarray:
        """``pixels`` if it has the subject's image size, else a CaptureError naming subject, camera, frame
        and file (a stage must never crop an image of another size with this size's intrinsics)."""
        if pixels.shape[:2] != self.image_size():
            raise CaptureError(
                f"{what} is {pixels.shape[1]}x{pixels.shape[0]}, expected "
                f"{self.image_size()[1]}x{self.image_size()[0]}",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=file,
            )
        return pixels

    # -- pixels --------------------------------------------------------------------------------------
    @abstractmethod
    def has_image(self, camera: str, frame: int) -> bool:
        """Whether the image exists; cheap (no decoding)."""

    @abstractmethod
    def image(self, camera: str, frame: int) -> np.ndarray:
        """uint8 RGB (H, W, 3). Raises MissingImageError for a dropped image, CaptureError if unreadable."""

    @abstractmethod
    def background(self, camera: str) -> np.ndarray:
        """The camera's clean plate, uint8 RGB (H, W, 3)."""

    @abstractmethod
    def mask(self, camera: str, frame: int) -> np.ndarray:
        """The foreground mask the capture ships, uint8 (H, W), 255 = foreground."""

    def missing_images(self) -> list[tuple[str, int]]:
        """(camera, frame) pairs listed in the timeline but absent from the capture."""
        return [
            (camera, item.frame)
            for camera in self.camera_ids
            for item in self.frames()
            if not self.has_image(camera, item.frame)
        ]

    def uncalibrated_cameras(self) -> list[str]:
        """Cameras with images but no calibration (ignored by every stage, reported by the index)."""
        return []

    # -- head --------------------------------------------------------------------------------------
    def mesh_frames(self) -> set[int]:
        """Frames that have a tracked mesh; cheap (no decoding)."""
        return {item.frame for item in self.frames()}

    @abstractmethod
    def head_pose(self, frame: int) -> np.ndarray:
        """4x4 head-to-world transform in metres: x_world = T @ x_head."""

    @abstractmethod
    def tracked_mesh(self, frame: int) -> np.ndarray:
        """Tracked mesh vertices (V, 3) in the head-local frame, metres."""

    @abstractmethod
    def mesh_faces(self) -> np.ndarray:
        """Triangles (F, 3) int64 indexing the tracked-mesh vertices."""

    @abstractmethod
    def expression_code(self, frame: int) -> np.ndarray:
        """The per-frame expression code (float32), the model's driving signal."""

    def head_centric_camera(self, camera: str, frame: int) -> Camera:
        """The camera with the head pose factored in: the head stays canonical, the camera moves."""
        return self.cameras()[camera].to_head_centric(self.head_pose(frame))


def cached_mesh(reader: CaptureReader, cache: dict[int, np.ndarray], frame: int) -> np.ndarray:
    """The frame's tracked mesh, decoded once per stage run however many cameras need it."""
    if frame not in cache:
        cache[frame] = reader.tracked_mesh(frame)
    return cache[frame]

"""Typed access to a subject's capture index (the JSON written by the capture_index stage).

Later stages plan from the index instead of re-reading 80 zips: cameras, head poses, gaps and the head
centre are all there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from avat3r_core.geometry.cameras import Camera


@dataclass(frozen=True)
class CaptureIndex:
    """A loaded capture index; cameras are world cameras at the shipped image resolution, metres."""

    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> CaptureIndex:
        return cls(json.loads(Path(path).read_text()))

    @property
    def subject(self) -> str:
        return self.data["subject"]

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.data["image_size"]
        return height, width

    @property
    def camera_ids(self) -> list[str]:
        return sorted(self.data["cameras"])

    @cached_property
    def cameras(self) -> dict[str, Camera]:
        height, width = self.image_size
        return {
            camera: Camera(K=np.asarray(c["K"]), w2c=np.asarray(c["w2c"]), width=width, height=height)
            for camera, c in self.data["cameras"].items()
        }

    @property
    def head_center(self) -> np.ndarray:
        """Head centre in head-local coordinates (bbox centre of the tracked mesh), metres."""
        return np.asarray(self.data["head_center"], dtype=np.float64)

    def head_to_world(self, frame: int) -> np.ndarray:
        return np.asarray(self.data["head_to_world"][str(frame)], dtype=np.float64)

    def head_centric(self, camera: str, frame: int) -> Camera:
        """The camera with the frame's head pose factored in (the head stays canonical)."""
        return self.cameras[camera].to_head_centric(self.head_to_world(frame))

    @cached_property
    def _missing(self) -> frozenset[tuple[str, int]]:
        return frozenset((camera, int(frame)) for camera, frame in self.data["missing_images"])

    def has_image(self, camera: str, frame: int) -> bool:
        return (camera, frame) not in self._missing

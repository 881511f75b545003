"""The `groundtruth` positions backend: the synthetic generator's true depth back-projected into each crop.

ORACLE maps, for synthetic captures only: the generator writes, per subject and camera,
`{groundtruth}/{subject}/cam{CAM}.npz` with `alpha` (F, H, W) uint8 {0, 255}, `depth` (F, H, W) float32
metres (camera-space z of the visible surface, not the distance along the ray; 0 where nothing is hit) and
`tracked` (F, H, W) bool, frame axis in the order of `meta.json`'s `frame_ids`, at the capture's image
resolution. Unlike the `mesh` backend these cover the whole foreground (hair, neck, shirt), as DUSt3R's maps
do, so the demo can train on DUSt3R-like maps without DUSt3R; unlike DUSt3R they are exact. A real capture
has no such files.

Each crop pixel centre (u + 0.5, v + 0.5) comes from source image position x0 + (u + 0.5) * size / out_size
(same for y): the crop camera is `Camera.crop_and_resize` of the image camera (same rotation and centre, only
K differs; checked against the ground-truth K). The depth and alpha of the source pixel containing that
point are taken (nearest pixel: depth is never averaged across a depth edge) and the depth is placed along
the crop pixel's own ray, `c2w_head @ (depth * K_crop^-1 [u + 0.5, v + 0.5, 1])`; without resampling
(window size == output size, the demo and the release) the two rays coincide and the map is exact.
Confidence is 1 where the true alpha is >= 0.5, else 0 (position 0); window pixels outside the image (black
padding) get confidence 0.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from avat3r_core.errors import CaptureError

ORACLE_DESCRIPTION = (
    "ORACLE: synthetic ground-truth depth and alpha back-projected into the crop cameras "
    "(ground truth, synthetic captures only; not an estimate)"
)


def source_pixels(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source image rows and columns, (out_size,) each, of the pixels holding the crop pixel centres.

    `window` is a stored `input/window` row `(x0, y0, size, out_size)`; indices may fall outside the image
    (black padding). Crop pixel u's centre is at source x0 + (u + 0.5) * size / out_size (corner convention,
    `Camera.crop_and_resize`), which lies in source pixel floor(...).
    """
    x0, y0, size, out_size = (int(v) for v in window)
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * (size / out_size)
    return y0 + np.floor(centres).astype(np.int64), x0 + np.floor(centres).astype(np.int64)


def groundtruth_position_map(
    depth: np.ndarray,
    alpha: np.ndarray,
    K: np.ndarray,
    w2c_head: np.ndarray,
    window: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Head-centric positions (S, S, 3) float32 and confidence (S, S) float32 of one input crop.

    `depth` (H, W) is the true camera-space z in metres and `alpha` (H, W) the true alpha (uint8 0-255 or
    float 0-1) of the source image; `K`, `w2c_head` and `window` are the crop's stored intrinsics,
    head-centric extrinsics and `(x0, y0, size, out_size)`.
    """
    height, width = depth.shape
    rows, cols = source_pixels(window)
    size = len(rows)
    inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
    r = np.broadcast_to(np.clip(rows, 0, height - 1)[:, None], (size, size))
    c = np.broadcast_to(np.clip(cols, 0, width - 1)[None, :], (size, size))
    z = depth[r, c].astype(np.float64)
    a = alpha[r, c].astype(np.float64)
    if alpha.dtype == np.uint8:
        a = a / 255.0
    foreground = inside & (a >= 0.5) & np.isfinite(z) & (z > 0.0)
    v, u = np.nonzero(foreground)
    pixels = np.stack([u + 0.5, v + 0.5, np.ones(len(u))], axis=0)
    camera_points = np.linalg.solve(np.asarray(K, dtype=np.float64), pixels) * z[v, u]
    w2c = np.asarray(w2c_head, dtype=np.float64)
    head = (camera_points - w2c[:3, 3:4]).T @ w2c[:3, :3]  # R^T (x - t), row vectors
    points = np.zeros((size, size, 3), dtype=np.float32)
    points[v, u] = head
    return points, foreground.astype(np.float32)


class GroundTruthPositions:
    """ORACLE position maps of one subject from the synthetic ground truth (one camera file in memory)."""

    description = ORACLE_DESCRIPTION

    def __init__(self, groundtruth: str | Path, subject: str) -> None:
        self.subject = subject
        self.folder = Path(groundtruth) / subject
        meta, cameras = self.folder / "meta.json", self.folder / "cameras.npz"
        for file in (meta, cameras):
            if not file.is_file():
                raise CaptureError(
                    "missing synthetic ground-truth file (positions.backend groundtruth works on synthetic "
                    "captures only)",
                    subject=subject,
                    file=file,
                )
        self._order = {int(f): i for i, f in enumerate(json.loads(meta.read_text())["frame_ids"])}
        with np.load(cameras) as arrays:
            self._K = {str(cam): k for cam, k in zip(arrays["camera_ids"], arrays["K"], strict=True)}
        self._camera: str | None = None
        self._depth = self._alpha = None

    def path(self, camera: str) -> Path:
        return self.folder / f"cam{camera}.npz"

    def check(self, camera: str, frame: int) -> None:
        """Fail early, naming the file, when the ground truth of (camera, frame) is missing."""
        file = self.path(camera)
        if not file.is_file():
            raise CaptureError(
                "missing synthetic ground-truth file (positions.backend groundtruth works on synthetic "
                "captures only)",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=file,
            )
        if camera not in self._K or frame not in self._order:
            raise CaptureError(
                "camera or frame not in the synthetic ground truth (cameras.npz, meta.json frame_ids)",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=self.folder / "meta.json",
            )

    def _load(self, camera: str, frame: int) -> None:
        self.check(camera, frame)
        if self._camera == camera:
            return
        file = self.path(camera)
        try:
            with np.load(file) as arrays:
                self._depth, self._alpha = arrays["depth"], arrays["alpha"]
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise CaptureError(
                f"unreadable synthetic ground truth: {exc}",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=file,
            ) from None
        self._camera = camera

    def __call__(
        self, camera: str, frame: int, K: np.ndarray, w2c_head: np.ndarray, window: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions (S, S, 3) and confidence (S, S) of input crop (camera, frame)."""
        self._load(camera, frame)
        f = self._order[frame]
        depth, alpha = self._depth[f], self._alpha[f]
        x0, y0, size, out_size = (int(v) for v in window)
        expected = np.array(self._K[camera], dtype=np.float64)
        expected[:2, 2] -= (x0, y0)
        expected[:2] *= out_size / size
        if not np.allclose(K, expected, rtol=1e-9, atol=1e-6):
            raise CaptureError(
                f"the crop's K {np.asarray(K).tolist()} is not the ground-truth K cut to window "
                f"{[x0, y0, size, out_size]} ({expected.tolist()}): crops and ground truth do not match",
                subject=self.subject,
                camera=camera,
                frame=frame,
                file=self.path(camera),
            )
        return groundtruth_position_map(depth, alpha, K, w2c_head, window)

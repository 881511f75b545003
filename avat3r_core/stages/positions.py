"""Stage `positions`: a position map and a confidence map for every input view (camera, timestep).

Backends: `dust3r` (DUSt3R on the input crop and its 3 partner crops of the same timestep, all 12 ordered
pairs, fused by global alignment with the calibrated head-centric cameras held fixed, so the result is in
the head-centric frame and metric scale), `mesh` (the tracked mesh rasterised into the crop camera; no
weights; the demo default) and `groundtruth` (ORACLE maps from the synthetic generator's true depth and
alpha, covering hair, neck and shirt like DUSt3R's; synthetic captures only, labelled `oracle` in the store).
Maps are stored at the input crop resolution as `position` (Ci, Ti, 3, H, W), head-centric metres, and
`confidence` (Ci, Ti, H, W) in [0, 1]: for DUSt3R `1 - 1/c` of its aligned confidence c >= 1 (raw
c = 1 / (1 - stored)), for the mesh 1 where the mesh is visible and 0 elsewhere (hair, neck), for the ground
truth 1 where the true alpha is >= 0.5. The model's confidence threshold (config) applies to this stored
value, the same scale for every backend; pixels without a prediction (outside the DUSt3R window, black
padding) have confidence 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avat3r_core.capture.base import CaptureReader, cached_mesh
from avat3r_core.errors import ConfigError
from avat3r_core.geometry.cameras import Camera
from avat3r_core.positions.mesh import mesh_position_map
from avat3r_core.store.zarr_store import open_store, write_store

log = logging.getLogger(__name__)


class InputCrops:
    """The input crops of one subject and their head-centric cameras, from crops.zarr."""

    def __init__(self, path: str | Path) -> None:
        group = open_store(path)
        self.rgb = group["input/rgb"]
        self.K = group["input/K"][...]
        self.w2c = group["input/w2c_head"][...]
        self.valid = group["input/valid"][...]
        self.window = group["input/window"][...]  # (Ci, Ti, 4): x0, y0, size, out_size in image pixels
        self.camera_ids = [str(c) for c in group["input/camera_ids"][...]]
        self.frames = [int(f) for f in group["input/frames"][...]]
        self.size = int(self.rgb.shape[2])
        self._camera = {c: i for i, c in enumerate(self.camera_ids)}
        self._frame = {f: i for i, f in enumerate(self.frames)}

    def index(self, camera: str, frame: int) -> tuple[int, int]:
        return self._camera[camera], self._frame[frame]

    def camera(self, camera: str, frame: int) -> Camera:
        c, t = self.index(camera, frame)
        return Camera(K=self.K[c, t], w2c=self.w2c[c, t], width=self.size, height=self.size)

    def image(self, camera: str, frame: int) -> np.ndarray:
        c, t = self.index(camera, frame)
        return self.rgb[c, t]


def run_positions(
    reader: CaptureReader,
    crops_path: str | Path,
    views: dict[str, Any],
    cfg: dict[str, Any],
    out: str | Path,
    *,
    groundtruth: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write positions.zarr for every valid input view; `groundtruth` is the synthetic ground-truth folder,
    needed (only) by the `groundtruth` backend."""
    subject = reader.subject
    crops = InputCrops(crops_path)
    backend = cfg["backend"]
    estimator = None
    oracle = None
    if backend == "dust3r":
        from avat3r_core.positions.dust3r import Dust3rPositions

        estimator = Dust3rPositions(cfg["dust3r"], subject=subject)
        description = estimator.description
    elif backend == "groundtruth":
        from avat3r_core.positions.groundtruth import GroundTruthPositions

        if groundtruth is None:
            raise ConfigError(
                "positions.backend",
                "groundtruth reads the synthetic capture's ground truth (--groundtruth DIR, which the rule "
                "passes when synthetic.enabled); a real capture has none: use mesh or dust3r",
            )
        oracle = GroundTruthPositions(groundtruth, subject)
        description = oracle.description
    elif backend == "mesh":
        description = "tracked mesh rasterised into the crop cameras (no weights)"
    else:
        raise ConfigError("positions.backend", f"expected mesh, dust3r or groundtruth, got {backend!r}")
    log.info("subject %s: positions backend %s", subject, description)
    n_c, n_t, size = len(crops.camera_ids), len(crops.frames), crops.size
    todo: dict[str, list[int]] = {}  # camera -> frames of its valid input views
    for camera, frame in views["input_views"]:
        if crops.valid[crops.index(camera, int(frame))]:
            todo.setdefault(camera, []).append(int(frame))
    if oracle is not None:  # fail before any work when a ground-truth file is missing
        for camera, frames in todo.items():
            for frame in frames:
                oracle.check(camera, frame)
    faces = reader.mesh_faces() if backend == "mesh" else None
    meshes: dict[int, np.ndarray] = {}  # each frame's tracked mesh is decoded once, not once per camera
    coverage: list[float] = []
    with write_store(out, stage="positions", subject=subject, config=cfg) as store:
        position = store.create_images("position", (n_c, n_t, 3, size, size), dtype="float32")
        confidence = store.create_images("confidence", (n_c, n_t, size, size), dtype="float32")
        valid = np.zeros((n_c, n_t), dtype=bool)
        for c, camera in enumerate(tqdm(crops.camera_ids, desc=f"{subject} positions", disable=not progress)):
            points = np.zeros((n_t, 3, size, size), dtype=np.float32)
            conf = np.zeros((n_t, size, size), dtype=np.float32)
            for frame in todo.get(camera, []):
                t = crops.index(camera, frame)[1]
                if backend == "mesh":
                    xyz, mask = mesh_position_map(
                        cached_mesh(reader, meshes, frame),
                        faces,
                        crops.camera(camera, frame),
                    )
                    points[t], conf[t] = xyz.transpose(2, 0, 1), mask.astype(np.float32)
                elif oracle is not None:
                    xyz, c_map = oracle(camera, frame, crops.K[c, t], crops.w2c[c, t], crops.window[c, t])
                    points[t], conf[t] = xyz.transpose(2, 0, 1), c_map
                else:
                    partners = views["partners_per_timestep"][camera][str(frame)]
                    xyz, c_map = estimator(crops, camera, partners, frame)
                    points[t], conf[t] = xyz.transpose(2, 0, 1), c_map
                valid[c, t] = True
                coverage.append(float((conf[t] > 0).mean()))
            position[c] = points
            confidence[c] = conf
        store.write_array("valid", valid)
        store.write_array("camera_ids", np.asarray(crops.camera_ids))
        store.write_array("frames", np.asarray(crops.frames, dtype=np.int64))
        summary = {
            "backend": description,
            "views": int(valid.sum()),
            "mean_coverage": float(np.mean(coverage or [0])),
            "oracle": oracle is not None,
        }
        store.set_attrs(
            summary=summary, random_weights="RANDOM WEIGHTS" in description, oracle=oracle is not None
        )
    log.info(
        "subject %s: %d position maps (%dx%d), mean %.1f%% of pixels with confidence > 0%s",
        subject,
        summary["views"],
        size,
        size,
        100 * summary["mean_coverage"],
        " (foreground fraction) -- ORACLE: synthetic ground truth, not an estimate" if oracle else "",
    )
    return summary

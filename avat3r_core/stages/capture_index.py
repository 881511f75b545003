"""Stage `capture_index`: one small file per subject with everything later stages plan from.

Cameras, the timeline with segments, dropped images, frames without a tracked mesh and every head pose are
read once here (zip directories and tiny text members only, no image decoding), so that later stages and the
DAG can plan without touching 80 zips again, and bad calibration or a NaN head pose fails at the start of a
run instead of hours into it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from avat3r_core import __version__
from avat3r_core.capture.base import CaptureReader
from avat3r_core.errors import CaptureError
from avat3r_core.geometry.crops import head_center
from avat3r_core.store.atomic import write_json_atomic

log = logging.getLogger(__name__)
INDEX_VERSION = 1


def build_capture_index(reader: CaptureReader, progress: bool = False) -> dict[str, Any]:
    """Collect the subject's calibration, timeline, gaps and head poses (metres, OpenCV, actual pixels)."""
    frames = reader.frames()
    cameras = reader.cameras()
    height, width = reader.image_size()
    missing = reader.missing_images()
    mesh_frames = reader.mesh_frames()
    uncalibrated = reader.uncalibrated_cameras()
    if uncalibrated:
        log.warning(
            "subject %s: %d camera(s) have images but no calibration and are ignored: %s",
            reader.subject,
            len(uncalibrated),
            ", ".join(uncalibrated),
        )
    first_mesh = next((item.frame for item in frames if item.frame in mesh_frames), None)
    if first_mesh is None:
        raise CaptureError("no frame has a tracked mesh", subject=reader.subject)
    # One head centre per subject keeps crops steady while the jaw moves (bbox centre, head-local metres).
    center = head_center(reader.tracked_mesh(first_mesh))
    head_poses = {
        str(item.frame): reader.head_pose(item.frame).tolist()
        for item in tqdm(frames, desc=f"{reader.subject} head poses", disable=not progress)
    }
    return {
        "index_version": INDEX_VERSION,
        "code_version": __version__,
        "dataset": reader.dataset,
        "subject": reader.subject,
        "image_size": [height, width],
        "cameras": {
            camera_id: {"K": camera.K.tolist(), "w2c": camera.w2c.tolist()}
            for camera_id, camera in sorted(cameras.items())
        },
        "frames": [[item.frame, item.segment] for item in frames],
        "segments": {name: len(ids) for name, ids in reader.segments().items()},
        "missing_images": [[camera, frame] for camera, frame in missing],
        "uncalibrated_cameras": uncalibrated,
        "frames_without_mesh": sorted(item.frame for item in frames if item.frame not in mesh_frames),
        "head_center": center.tolist(),
        "head_to_world": head_poses,
    }


def write_capture_index(reader: CaptureReader, out: str | Path, progress: bool = True) -> dict[str, Any]:
    index = build_capture_index(reader, progress=progress)
    write_json_atomic(out, index)
    n_images = len(index["cameras"]) * len(index["frames"])
    log.info(
        "subject %s: %d cameras, %d frames in %d segments, %d/%d images missing (%.3f%%), "
        "%d frames without mesh",
        reader.subject,
        len(index["cameras"]),
        len(index["frames"]),
        len(index["segments"]),
        len(index["missing_images"]),
        n_images,
        100.0 * len(index["missing_images"]) / max(n_images, 1),
        len(index["frames_without_mesh"]),
    )
    return index

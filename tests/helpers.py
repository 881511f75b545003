"""Helpers shared by the tests: the stage config of the tiny capture, planning a subject, breaking zips."""

from __future__ import annotations

import zipfile
from pathlib import Path

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.config import validate_sections
from avat3r_core.stages.capture_index import build_capture_index
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.stages.views import select_views


def rewrite_member(archive: Path, member: str, data: bytes) -> None:
    """Replace one member of a zip (keeping the others and the stored layout)."""
    with zipfile.ZipFile(archive) as source:
        contents = {name: source.read(name) for name in source.namelist()}
    contents[member] = data
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as target:
        for name, payload in contents.items():
            target.writestr(name, payload)


# The fixture capture is 128x83 (downsample 32): crops keep the 512:667 ratio at 64 and 83 px.
STAGES = validate_sections(
    {
        "frames": {"supervision_stride": 2},
        "views": {},
        "matting": {},
        "crop": {"input_size": 64, "supervision_size": 83},
    }
)


def plan(root: Path, subject: str) -> tuple[Ava256Capture, CaptureIndex, dict, dict]:
    reader = Ava256Capture(root, subject)
    index = CaptureIndex(build_capture_index(reader))
    frames = select_frames(index.data, STAGES["frames"], seed=0)
    return reader, index, frames, select_views(index, frames, STAGES["views"], seed=0)


SHARD_STAGES = validate_sections(
    {"shards": {}, "features": {"input_size": 128, "tiny": {"embed_dim": 32, "depth": 1, "num_heads": 2}}}
)

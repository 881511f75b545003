"""Contact sheet of a subject's input crops with their mattes (crops.zarr): is the head centred and whole,
is the matte clean?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from avat3r_core.report.draw import spread, tile_grid
from avat3r_core.store.zarr_store import open_store


def contact_sheet(
    views: Sequence[tuple[str, np.ndarray, np.ndarray]],
    title: Sequence[str] = (),
    *,
    tile: int = 128,
    columns: int = 4,
) -> Image.Image:
    """One cell per view, `(label, rgb (S, S, 3) uint8, alpha (S, S) uint8)`: the crop, then its matte in
    grey (white = foreground). Layout: `draw.tile_grid` (cell i's crop at `grid_origin(i, ...)`)."""
    return tile_grid(
        [(label, [rgb, alpha]) for label, rgb, alpha in views], title, tile=tile, columns=columns
    )


def pick_views(valid: np.ndarray, wanted: int) -> list[tuple[int, int]]:
    """(camera, timestep) indices of up to `wanted` valid views: cameras spread over the dome, each at its
    middle valid timestep; more timesteps of the same cameras when there are fewer cameras than `wanted`."""
    per_camera = [np.flatnonzero(row).tolist() for row in valid]
    cameras = [c for c, ts in enumerate(per_camera) if ts]
    chosen: list[tuple[int, int]] = []
    rounds = 0
    while len(chosen) < wanted and cameras:
        left = [c for c in cameras if len(per_camera[c]) > rounds]
        if not left:
            break
        for i in spread(len(left), wanted - len(chosen)):
            ts = per_camera[left[i]]
            chosen.append((left[i], ts[(len(ts) // 2 + rounds) % len(ts)]))
        rounds += 1
    return chosen


def crops_contact_sheet(crops: str | Path, *, max_views: int = 12, tile: int = 128) -> Image.Image:
    """The contact sheet of a crops.zarr store: up to `max_views` input views with their mattes."""
    group = open_store(crops)
    valid = group["input/valid"][...]
    cameras = [str(c) for c in group["input/camera_ids"][...]]
    frames = [int(f) for f in group["input/frames"][...]]
    rgb, alpha = group["input/rgb"], group["input/alpha"]
    views = [
        (f"cam {cameras[c]}  frame {frames[t]}", np.asarray(rgb[c, t]), np.asarray(alpha[c, t]))
        for c, t in pick_views(valid, max_views)
    ]
    subject = group.attrs.get("subject", "")
    size = int(rgb.shape[2])
    title = [
        f"{subject}: input crops and mattes, {len(views)} of {int(valid.sum())} input views "
        f"({size} px, shown at {tile} px)",
        "left: crop composited on black; right: matte (white = foreground)",
    ]
    return contact_sheet(views, title, tile=tile)

"""Position maps coloured by head-centric coordinate, next to their confidence (positions.zarr): does the
geometry the network is fed look like a head, and where is it trusted?"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from avat3r_core.report.contact_sheet import pick_views
from avat3r_core.report.draw import tile_grid
from avat3r_core.store.zarr_store import open_store


def coordinate_bounds(views: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (lo, hi) of the positions with confidence > 0 over all views (shared colour scale)."""
    points = [xyz.reshape(3, -1)[:, conf.reshape(-1) > 0] for xyz, conf in views]
    points = [p for p in points if p.size]
    if not points:
        return np.zeros(3), np.ones(3)
    stacked = np.concatenate(points, axis=1)
    lo, hi = stacked.min(axis=1), stacked.max(axis=1)
    return lo, np.where(hi > lo, hi, lo + 1e-6)


def colour_positions(xyz: np.ndarray, conf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, H, W) positions -> (H, W, 3) uint8: red, green, blue = x, y, z scaled from [lo, hi] to [0, 255];
    black where the confidence is 0."""
    scaled = (xyz - lo[:, None, None]) / (hi - lo)[:, None, None]
    rgb = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return np.where((conf > 0)[..., None], rgb, 0).astype(np.uint8)


def colour_confidence(conf: np.ndarray, top: float) -> np.ndarray:
    """(H, W) confidence -> uint8 grey, white at `top` (the largest confidence shown)."""
    return (np.clip(conf / top if top > 0 else conf * 0, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def position_sheet(
    views: Sequence[tuple[str, np.ndarray, np.ndarray]],
    title: Sequence[str] = (),
    *,
    tile: int = 128,
    columns: int = 4,
) -> tuple[Image.Image, tuple[np.ndarray, np.ndarray, float]]:
    """One cell per view, `(label, xyz (3, H, W), confidence (H, W))`: positions coloured by coordinate on
    one scale for all views, then the confidence in grey. Returns the image and (lo, hi, top confidence)."""
    lo, hi = coordinate_bounds([(xyz, conf) for _, xyz, conf in views])
    top = max((float(conf.max()) for _, _, conf in views), default=1.0)
    cells = [
        (label, [colour_positions(xyz, conf, lo, hi), colour_confidence(conf, top)])
        for label, xyz, conf in views
    ]
    return tile_grid(cells, title, tile=tile, columns=columns), (lo, hi, top)


def positions_sheet(positions: str | Path, *, max_views: int = 12, tile: int = 128) -> Image.Image:
    """The sheet of a positions.zarr store: up to `max_views` input views."""
    group = open_store(positions)
    valid = group["valid"][...]
    cameras = [str(c) for c in group["camera_ids"][...]]
    frames = [int(f) for f in group["frames"][...]]
    position, confidence = group["position"], group["confidence"]
    views = [
        (
            f"cam {cameras[c]}  frame {frames[t]}",
            np.asarray(position[c, t], dtype=np.float32),
            np.asarray(confidence[c, t], dtype=np.float32),
        )
        for c, t in pick_views(valid, max_views)
    ]
    attrs = dict(group.attrs)
    summary = attrs.get("summary") or {}
    backend = str(summary.get("backend", "?"))
    lo, hi = coordinate_bounds([(xyz, conf) for _, xyz, conf in views])
    top = max((float(conf.max()) for _, _, conf in views), default=1.0)
    title = [
        f"{attrs.get('subject', '')}: position maps, {len(views)} of {int(valid.sum())} input views",
        f"backend: {backend if len(backend) <= 100 else backend[:99] + '…'}",
        "left: R,G,B = head-centric x,y,z: "
        + ", ".join(f"{axis} {a:+.3f}..{b:+.3f} m" for axis, a, b in zip("xyz", lo, hi, strict=True))
        + "; black = confidence 0",
        f"right: confidence, white = {top:.3g}"
        + ("  (ORACLE: synthetic ground truth)" if attrs.get("oracle") else ""),
    ]
    image, _ = position_sheet(views, title, tile=tile)
    return image

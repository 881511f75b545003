"""The camera dome of a subject seen from the front (views.json): which cameras may be inputs, and which
partner views DUSt3R pairs each input camera with.

Azimuthal equidistant projection about the head's forward axis: a camera's distance from the centre is its
angle from the forward axis (0 in the middle, 180 degrees on the rim), its direction the azimuth of its
head-centric direction (x to the right, y down). Cameras use their reference pose (the mean head-centric
direction over the input timesteps, the pose partner selection used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from avat3r_core.report.draw import font

WHITE = (255, 255, 255)
RING = (200, 200, 200)
LIMIT = (40, 160, 40)  # views.max_angle_deg
OTHER = (150, 150, 150)  # cameras that cannot be inputs (behind the head)
INPUT = (40, 90, 220)  # input-capable cameras
LINK = (170, 195, 240)  # every input camera's partners, faint
SELECTED = (220, 30, 30)  # the highlighted input camera
PARTNER = (245, 140, 20)  # its partners
CANDIDATE = (235, 200, 40)  # its farthest-point candidates (outline)
INK = (30, 30, 30)
DOT = 5


@dataclass(frozen=True)
class DomeLayout:
    """Where the dome lies in the picture: centre and the radius of the 180-degree rim, in pixels."""

    cx: float
    cy: float
    radius: float

    def xy(self, theta_deg: float, phi: float) -> tuple[float, float]:
        r = self.radius * theta_deg / 180.0
        return self.cx + r * np.cos(phi), self.cy + r * np.sin(phi)


TITLE_H = 56
LEGEND_H = 64


def dome_layout(size: int) -> DomeLayout:
    return DomeLayout(cx=size / 2, cy=TITLE_H + size / 2, radius=size / 2 - 24)


def dome_angles(
    centers: np.ndarray, head_center: Sequence[float], forward_axis: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(theta in degrees from the forward axis, azimuth phi in radians) of camera centres (C, 3)."""
    forward = np.asarray(forward_axis, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    d = np.asarray(centers, dtype=np.float64) - np.asarray(head_center, dtype=np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta = np.degrees(np.arccos(np.clip(d @ forward, -1.0, 1.0)))
    axis = np.eye(3)[0] if abs(forward[0]) < 0.9 else np.eye(3)[1]
    e1 = axis - (axis @ forward) * forward
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(forward, e1)
    return theta, np.arctan2(d @ e2, d @ e1)


def camera_dome(
    views: dict[str, Any],
    head_center: Sequence[float],
    forward_axis: Sequence[float] = (0.0, 0.0, 1.0),
    *,
    size: int = 560,
    highlight: str | None = None,
) -> Image.Image:
    """The dome picture of a views.json dict. `highlight`: the input camera whose partners are drawn
    strongly (default: the input camera nearest the forward axis)."""
    cameras = [str(c) for c in views["camera_ids"]]
    theta, phi = dome_angles(np.asarray(views["reference_centers"]), head_center, forward_axis)
    index = {camera: i for i, camera in enumerate(cameras)}
    inputs = [str(c) for c in views["input_cameras"]]
    partners = {str(c): entry for c, entry in views.get("partners", {}).items()}
    if highlight is None and inputs:
        highlight = min(inputs, key=lambda c: theta[index[c]])
    layout = dome_layout(size)
    image = Image.new("RGB", (size, TITLE_H + size + LEGEND_H), WHITE)
    draw = ImageDraw.Draw(image)

    def at(camera: str) -> tuple[float, float]:
        i = index[camera]
        return layout.xy(theta[i], phi[i])

    def ring(angle: float, colour: tuple[int, int, int], width: int) -> None:
        r = layout.radius * angle / 180.0
        draw.ellipse(
            [layout.cx - r, layout.cy - r, layout.cx + r, layout.cy + r], outline=colour, width=width
        )

    for angle in (45, 90, 135, 180):
        ring(angle, RING, 1)
        draw.text(
            (layout.cx + 3, layout.cy - layout.radius * angle / 180 + 2),
            f"{angle}°",
            fill=OTHER,
            font=font(10),
        )
    ring(float(views["max_angle_deg"]), LIMIT, 2)
    draw.line([layout.cx - 6, layout.cy, layout.cx + 6, layout.cy], fill=INK)
    draw.line([layout.cx, layout.cy - 6, layout.cx, layout.cy + 6], fill=INK)
    for camera in inputs:
        for partner in partners.get(camera, {}).get("partners", []):
            draw.line([at(camera), at(partner)], fill=LINK, width=1)
    chosen = partners.get(highlight, {}) if highlight else {}
    for partner in chosen.get("partners", []):
        draw.line([at(highlight), at(partner)], fill=SELECTED, width=2)

    def dot(camera: str, colour: tuple[int, int, int], radius: int = DOT) -> None:
        x, y = at(camera)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=INK)

    input_set = set(inputs)
    for camera in cameras:
        dot(camera, INPUT if camera in input_set else OTHER)
    for candidate in chosen.get("candidates", []):
        x, y = at(candidate)
        r = DOT + 3
        draw.ellipse([x - r, y - r, x + r, y + r], outline=CANDIDATE, width=2)
    for partner in chosen.get("partners", []):
        dot(partner, PARTNER)
    if highlight:
        dot(highlight, SELECTED, DOT + 1)
    for camera in [highlight, *chosen.get("partners", [])] if highlight else []:
        x, y = at(camera)
        draw.text((x + 8, y - 6), camera, fill=INK, font=font(10))

    subject = views.get("subject", "")
    draw.text((8, 4), f"{subject}: camera dome seen from the front", fill=INK, font=font(13))
    draw.text(
        (8, 21),
        f"{len(inputs)} of {len(cameras)} cameras input-capable: within {views['max_angle_deg']:g}° "
        "of the forward axis (green ring)",
        fill=INK,
        font=font(11),
    )
    draw.text(
        (8, 36),
        "distance from the centre = angle from the forward axis (rim: behind the head); x right, y down",
        fill=INK,
        font=font(11),
    )
    y = TITLE_H + size + 6
    entries = [
        (INPUT, "input-capable"),
        (OTHER, "not an input (back-facing)"),
        (SELECTED, f"camera {highlight}" if highlight else "no input camera"),
        (PARTNER, "its partner views"),
    ]
    x = 8
    for colour, text in entries:
        draw.ellipse([x, y + 2, x + 10, y + 12], fill=colour, outline=INK)
        draw.text((x + 14, y), text, fill=INK, font=font(11))
        x += 24 + int(draw.textlength(text, font=font(11)))
    draw.ellipse([8, y + 22, 20, y + 34], outline=CANDIDATE, width=2)
    draw.text((24, y + 20), "its farthest-point candidates", fill=INK, font=font(11))
    draw.line([220, y + 28, 250, y + 28], fill=LINK, width=1)
    draw.text((256, y + 20), "partners of every input camera", fill=INK, font=font(11))
    return image

"""The head-centric frame of an avatar made from photos: from the recovered cameras and the head's position.

DUSt3R's global alignment returns cameras and points in an arbitrary world (one camera's frame at an
arbitrary scale). The model was trained in the pipeline's head-centric frame (DESIGN.md "Conventions";
Ava-256's head frame converted to metres at the reader): origin at the head centre, +y up, +z the face's
forward direction, metres. This module builds that frame for a set of photos:

* **Head centre.** In every view, the 2D head (:func:`avat3r_core.create.matting.detect_head`) gives the
  centre pixel and the head breadth in pixels. The visible surface depth there is the median aligned depth of
  the matted pixels within the central ellipse of the head (0.35 x 0.45 breadths); the centre lies
  ``CENTRE_BEHIND_SURFACE`` breadths further along the pixel's ray (the face is ~0.1 m in front of the
  centre of the skull's bounding box, which is what the training data's head centre is). The per-view
  estimates are averaged (for a single photo, the one estimate is the centre).
* **Scale.** DUSt3R's scale is arbitrary; metres come from the head breadth: breadth_px x depth / focal is the
  breadth in world units (depth of the head centre, where the skull is widest, not of the face surface),
  and the world is scaled so that its median over views is ``HEAD_BREADTH_M``
  (0.16 m, a typical adult head breadth). An unusually small or large head is therefore normalised to a
  typical one -- the avatar's absolute size is an assumption, its proportions are not.
* **Axes.** +z (forward) is the mean direction from the head centre to the cameras: phone captures for an
  avatar photograph the face, so on average the cameras sit in front of it (the model's inputs are
  front-facing too). +y (up) is the mean of the cameras' image-up directions made orthogonal to +z: photos
  are upright once their EXIF orientation is applied. +x = y x z (right-handed, Ava-256's convention).

The crops of the model's input views are then square windows centred on the projected head centre whose
side covers ``CROP_EXTENT_M`` at the head centre's depth: 0.28 m, the extent of the training input windows at
the head (the synthetic dome frames a ~250 mm head at ~0.9 of the 512/667-width input window), so the
head fills the crop as it did in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avat3r_core.models.dust3r.free_alignment import FreeAlignmentResult

__all__ = ["CENTRE_BEHIND_SURFACE", "CROP_EXTENT_M", "HEAD_BREADTH_M", "HeadFrame", "head_frame"]

HEAD_BREADTH_M = 0.16
CENTRE_BEHIND_SURFACE = 0.6
"""Head centre behind the visible face surface, in head breadths (~0.1 m for a 0.16 m head)."""
CROP_EXTENT_M = 0.28


@dataclass(frozen=True)
class HeadFrame:
    """Head-centric frame in the alignment's world: ``rotation`` columns are the head's x, y, z axes (world),
    ``centre`` the head centre (world units), ``scale`` metres per world unit."""

    rotation: np.ndarray
    centre: np.ndarray
    scale: float
    per_view_centres: np.ndarray  # (N, 3) world
    per_view_breadth: np.ndarray  # (N,) head breadth in world units

    def to_head(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> head-centric metres."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.rotation * self.scale

    def w2c_head(self, c2w_world: np.ndarray) -> np.ndarray:
        """A camera's world-to-camera matrix in the head frame (metres) from its world camera-to-world."""
        rot_c = c2w_world[:3, :3].T
        t_c = -rot_c @ c2w_world[:3, 3]
        out = np.eye(4)
        out[:3, :3] = rot_c @ self.rotation
        out[:3, 3] = self.scale * (rot_c @ self.centre + t_c)
        return out


def _head_region(height: int, width: int, centre: tuple[float, float], breadth: float) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width] + 0.5
    return ((u - centre[0]) / (0.35 * breadth)) ** 2 + ((v - centre[1]) / (0.45 * breadth)) ** 2 <= 1.0


def head_frame(
    result: FreeAlignmentResult,
    centres: np.ndarray,
    breadths: np.ndarray,
    alphas: np.ndarray,
) -> HeadFrame:
    """The head frame (module docstring) from the alignment and each view's 2D head at the prediction size.

    ``centres`` (N, 2) head centre pixels, ``breadths`` (N,) head breadth in pixels, ``alphas`` (N, H, W) the
    mattes, all in the DUSt3R input images the alignment was computed on.
    """
    n, height, width = result.depth.shape
    per_centre, per_breadth = np.zeros((n, 3)), np.zeros(n)
    for i in range(n):
        region = _head_region(height, width, tuple(centres[i]), float(breadths[i]))
        pick = region & (alphas[i] >= 0.5)
        if pick.sum() < 3:
            pick = region
        if pick.sum() < 1:
            v = int(np.clip(centres[i][1], 0, height - 1))
            u = int(np.clip(centres[i][0], 0, width - 1))
            pick = np.zeros((height, width), dtype=bool)
            pick[v, u] = True
        surface = float(np.median(result.depth[i][pick]))
        f = float(result.focal[i])
        # The silhouette's breadth is measured at the centre's depth (the widest part of the skull), which
        # lies CENTRE_BEHIND_SURFACE breadths behind the face: b = (b_px / f) (surface + k b), solved for b.
        ratio = float(breadths[i]) / f
        per_breadth[i] = ratio * surface / max(1.0 - CENTRE_BEHIND_SURFACE * ratio, 0.2)
        depth = surface + CENTRE_BEHIND_SURFACE * per_breadth[i]
        ray = np.array(
            [
                (centres[i][0] - result.principal[i, 0]) / f,
                (centres[i][1] - result.principal[i, 1]) / f,
                1.0,
            ]
        )
        per_centre[i] = result.c2w[i, :3, :3] @ (depth * ray) + result.c2w[i, :3, 3]
    centre = per_centre.mean(0)
    scale = HEAD_BREADTH_M / float(np.median(per_breadth))

    eyes = result.c2w[:, :3, 3] - centre
    forward = (eyes / np.linalg.norm(eyes, axis=1, keepdims=True)).mean(0)
    if np.linalg.norm(forward) < 1e-6:  # cameras all around the head: fall back to the first one
        forward = eyes[0]
    forward = forward / np.linalg.norm(forward)
    up = (-result.c2w[:, :3, 1]).mean(0)  # image up (OpenCV -y) of every camera, in world
    up = up - (up @ forward) * forward
    if np.linalg.norm(up) < 1e-6:
        up = -result.c2w[0, :3, 1] - (-result.c2w[0, :3, 1] @ forward) * forward
    up = up / np.linalg.norm(up)
    right = np.cross(up, forward)
    rotation = np.stack([right, up, forward], axis=1)
    return HeadFrame(
        rotation=rotation,
        centre=centre,
        scale=scale,
        per_view_centres=per_centre,
        per_view_breadth=per_breadth,
    )

"""Per-pixel camera rays, the Plücker-ray conditioning Avat3r feeds its ViT alongside each image.

Rays go through pixel centres ``(j + 0.5, i + 0.5)`` (see :mod:`avat3r_core.geometry.cameras` for the
pixel convention). Outputs are float64 so that geometry stays exact until the model casts to its own
dtype.
"""

from __future__ import annotations

import numpy as np

from avat3r_core.geometry.cameras import Camera, pixel_centers


def ray_directions(camera: Camera) -> np.ndarray:
    """Unit ray directions in world coordinates through every pixel centre, shape (H, W, 3), float64."""
    uv = pixel_centers(camera.width, camera.height).reshape(-1, 2)
    homo = np.concatenate([uv, np.ones((uv.shape[0], 1))], axis=1)
    cam_dirs = np.linalg.solve(camera.K, homo.T).T
    world = cam_dirs @ camera.w2c[:3, :3]  # R^T applied to each row
    world /= np.linalg.norm(world, axis=1, keepdims=True)
    return world.reshape(camera.height, camera.width, 3)


def plucker_rays(camera: Camera) -> np.ndarray:
    """Plücker coordinates of every pixel-centre ray, shape (H, W, 6), float64.

    Channels are ``[o x d, d]``: the moment first, then the unit world direction ``d``; ``o`` is the
    camera centre. The moment does not depend on which point of the ray is used as ``o``.
    """
    d = ray_directions(camera)
    moment = np.cross(np.broadcast_to(camera.center, d.shape), d)
    return np.concatenate([moment, d], axis=-1)

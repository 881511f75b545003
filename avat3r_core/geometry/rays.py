"""Per-pixel camera rays, the Plücker-ray conditioning Avat3r feeds its ViT alongside each image.

Rays go through pixel centres ``(j + 0.5, i + 0.5)`` (see :mod:`avat3r_core.geometry.cameras` for the
pixel convention). Outputs are float64 so that geometry stays exact until the model casts to its own
dtype.
"""

from __future__ import annotations

import numpy as np

from avat3r_core.geometry.cameras import Camera


def ray_directions(camera: Camera) -> np.ndarray:
    """Unit ray directions in world coordinates through every pixel centre, shape (H, W, 3), float64.

    Evaluated separably (K^-1 applied to the pixel-centre column and row vectors, then broadcast), since
    the loader computes this for every input view of every sample: 512^2 rays take a few milliseconds.
    """
    k_inv = np.linalg.inv(np.asarray(camera.K, dtype=np.float64))
    cam_to_world = np.asarray(camera.w2c, dtype=np.float64)[:3, :3].T
    # World direction of pixel (u, v): R^T K^-1 [u, v, 1]^T = A[:, 0] u + A[:, 1] v + A[:, 2].
    a = cam_to_world @ k_inv
    u = np.arange(camera.width, dtype=np.float64) + 0.5
    v = np.arange(camera.height, dtype=np.float64) + 0.5
    world = (v[:, None, None] * a[:, 1]) + (u[None, :, None] * a[:, 0]) + a[:, 2]
    world /= np.linalg.norm(world, axis=-1, keepdims=True)
    return world


def plucker_rays(camera: Camera) -> np.ndarray:
    """Plücker coordinates of every pixel-centre ray, shape (H, W, 6), float64.

    Channels are ``[o x d, d]``: the moment first, then the unit world direction ``d``; ``o`` is the
    camera centre. The moment does not depend on which point of the ray is used as ``o``.
    """
    d = ray_directions(camera)
    o = np.asarray(camera.center, dtype=np.float64)
    moment = np.stack(
        [
            o[1] * d[..., 2] - o[2] * d[..., 1],
            o[2] * d[..., 0] - o[0] * d[..., 2],
            o[0] * d[..., 1] - o[1] * d[..., 0],
        ],
        axis=-1,
    )
    return np.concatenate([moment, d], axis=-1)

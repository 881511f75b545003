"""The `mesh` positions backend: rasterise the tracked mesh into a crop camera.

No weights are needed, and on a capture whose mesh is exact (the synthetic one) the positions are exact
where the mesh is visible. Hair, neck and everything else the tracked mesh lacks get no position and
confidence 0, so the model's confidence filter drops them, as it drops low-confidence DUSt3R pixels.
"""

from __future__ import annotations

import numpy as np

from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.raster import rasterize


def mesh_position_map(
    vertices: np.ndarray, faces: np.ndarray, camera: Camera
) -> tuple[np.ndarray, np.ndarray]:
    """Head-local position (H, W, 3) float32 of the visible mesh surface at each pixel centre, and the mask.

    `camera` is a head-centric camera (w2c_head), so the vertices are used in the head-local frame as given.
    Back faces are kept: real topologies need not be consistently wound, and the z-buffer resolves them.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    verts_cam = vertices @ camera.R.T + camera.t
    raster = rasterize(verts_cam, faces, camera.K, camera.height, camera.width, cull_backfaces=False)
    mask = raster.covered
    points = np.zeros((camera.height, camera.width, 3), dtype=np.float32)
    corners = vertices[faces[raster.face_id[mask]]]  # (M, 3 corners, 3)
    points[mask] = np.einsum("mk,mkd->md", raster.bary[mask].astype(np.float64), corners)
    return points, mask

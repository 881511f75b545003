"""A vectorised z-buffer triangle rasteriser in numpy.

The synthetic capture needs exact ground truth (coverage, depth, which surface is visible) that the readers
and the stages can be tested against, and no external renderer is available everywhere, so this is a small,
exactly specified rasteriser:

- pixel (i, j) has its centre at image coordinates (u, v) = (j + 0.5, i + 0.5), the image's top-left corner
  at (0, 0);
- a pixel is covered by a triangle when its centre lies inside or on the projected triangle;
- depth is the camera-space z of the surface at the pixel centre (perspective-correct), the nearest one wins;
- barycentric weights are perspective-correct, so attributes interpolate as on the 3D triangle.

All triangles are processed at once: each triangle's bounding-box rows are enumerated into flat arrays, the
exact span of covered pixel centres on each row is solved from the three edge functions, the covered
(triangle, pixel) pairs are expanded, and the nearest one per pixel is found by one lexicographic sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Raster:
    """What is visible at each pixel.

    face_id: (H, W) int32, index of the visible triangle, -1 where nothing is hit.
    bary: (H, W, 3) float32 perspective-correct barycentric weights of the triangle's vertices (0 if empty).
    depth: (H, W) float32 camera-space z of the visible surface, 0 where nothing is hit.
    """

    face_id: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        """(H, W) bool: something is visible at the pixel."""
        return self.face_id >= 0


def _min3(x: np.ndarray) -> np.ndarray:
    """Row-wise minimum of an (n, 3) array (much faster than a width-3 axis reduction)."""
    return np.minimum(np.minimum(x[:, 0], x[:, 1]), x[:, 2])


def _max3(x: np.ndarray) -> np.ndarray:
    """Row-wise maximum of an (n, 3) array."""
    return np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2])


def rasterize(
    verts_cam: np.ndarray,
    faces: np.ndarray,
    k: np.ndarray,
    height: int,
    width: int,
    cull_backfaces: bool = True,
    near: float = 1e-6,
) -> Raster:
    """Rasterise triangles given in camera coordinates (OpenCV axes) with pinhole intrinsics `k`.

    Faces are wound so that ``cross(v1 - v0, v2 - v0)`` points out of the surface; with `cull_backfaces` the
    triangles facing away from the camera are skipped, which halves the work for closed surfaces and is exact
    for them. Triangles with a vertex at or behind `near` are dropped (the synthetic scene never comes close
    to a camera, so no clipping is implemented).
    """
    verts_cam = np.asarray(verts_cam, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    face_id = np.full((height, width), -1, dtype=np.int32)
    bary_out = np.zeros((height, width, 3), dtype=np.float32)
    depth_out = np.zeros((height, width), dtype=np.float32)
    if len(faces) == 0:
        return Raster(face_id, bary_out, depth_out)

    tri = verts_cam[faces]  # (M, 3, 3)
    z = tri[:, :, 2]
    keep = (z[:, 0] > near) & (z[:, 1] > near) & (z[:, 2] > near)
    if cull_backfaces:
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        keep &= np.einsum("mk,mk->m", normal, tri[:, 0]) < 0.0  # camera centre is the origin
    ids = np.nonzero(keep)[0]
    tri, z = tri[ids], z[ids]

    # Projection to image coordinates.
    proj = tri @ np.asarray(k, dtype=np.float64).T
    u = proj[:, :, 0] / proj[:, :, 2]
    v = proj[:, :, 1] / proj[:, :, 2]
    # Twice the signed screen area; zero-area triangles cover no pixel centre in a stable way, so drop them.
    area = (u[:, 1] - u[:, 0]) * (v[:, 2] - v[:, 0]) - (u[:, 2] - u[:, 0]) * (v[:, 1] - v[:, 0])
    # Edge functions as affine maps of the pixel centre: l_k(u, v) = a_k u + b_k v + c_k, normalised by the
    # signed area so that l_k are the screen-space barycentrics whatever the orientation.
    ok = np.abs(area) > 1e-12
    ids, u, v, z, area = ids[ok], u[ok], v[ok], z[ok], area[ok]
    if len(ids) == 0:
        return Raster(face_id, bary_out, depth_out)
    nxt, prv = [1, 2, 0], [2, 0, 1]
    a = (v[:, nxt] - v[:, prv]) / area[:, None]
    b = (u[:, prv] - u[:, nxt]) / area[:, None]
    c = (u[:, nxt] * v[:, prv] - u[:, prv] * v[:, nxt]) / area[:, None]
    iz = 1.0 / z
    # 1/z is affine in screen space too: its coefficients are the barycentric ones weighted by 1/z_k.
    za = np.einsum("mk,mk->m", a, iz)
    zb = np.einsum("mk,mk->m", b, iz)
    zc = np.einsum("mk,mk->m", c, iz)

    # Scanline enumeration: one entry per (triangle, bounding-box row), then the exact span of pixel centres
    # inside the triangle on that row, so only covered (triangle, pixel) pairs are ever materialised.
    u_min, u_max = _min3(u), _max3(u)
    i0 = np.maximum(np.ceil(_min3(v) - 0.5), 0).astype(np.int64)
    i1 = np.minimum(np.floor(_max3(v) - 0.5), height - 1).astype(np.int64)
    ny = np.maximum(i1 - i0 + 1, 0)
    row_tri = np.repeat(np.arange(len(ids)), ny)
    row_start = np.cumsum(ny) - ny
    row_i = i0[row_tri] + (np.arange(len(row_tri)) - row_start[row_tri])
    pv = row_i + 0.5
    ra = a[row_tri]
    rs = b[row_tri] * pv[:, None] + c[row_tri]  # l_k = ra_k * u + rs_k on this row
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -rs / ra
    lo = _max3(np.where(ra > 0, bound, -np.inf))
    hi = _min3(np.where(ra < 0, bound, np.inf))
    flat = (ra == 0) & (rs < 0)
    empty = flat[:, 0] | flat[:, 1] | flat[:, 2]
    lo = np.maximum(lo, u_min[row_tri])  # the bounding box guards against ill-conditioned rows
    hi = np.minimum(hi, u_max[row_tri])
    j0 = np.maximum(np.ceil(lo - 0.5), 0)
    j1 = np.minimum(np.floor(hi - 0.5), width - 1)
    nx = np.where(empty, 0, np.maximum(j1 - j0 + 1, 0)).astype(np.int64)
    j0 = j0.astype(np.int64)

    pix_row = np.repeat(np.arange(len(row_tri)), nx)
    pix_start = np.cumsum(nx) - nx
    pj = j0[pix_row] + (np.arange(len(pix_row)) - pix_start[pix_row])
    pi = row_i[pix_row]
    tri_of_pix = row_tri[pix_row]
    pu = pj + 0.5
    inv_depth = za[tri_of_pix] * pu + (zb[tri_of_pix] * (pi + 0.5) + zc[tri_of_pix])

    # Nearest candidate per pixel = largest 1/z: sort by (pixel, -1/z) and keep the first of each pixel.
    pixel = pi * width + pj
    order = np.lexsort((-inv_depth, pixel))
    pixel_sorted = pixel[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pixel_sorted[1:] != pixel_sorted[:-1]
    win = order[first]

    # Perspective-correct barycentrics only for the winners: b_k = (l_k / z_k) / (1 / z).
    wt, wp = tri_of_pix[win], pixel[win]
    wu, wv = pu[win], pi[win] + 0.5
    lam = a[wt] * wu[:, None] + b[wt] * wv[:, None] + c[wt]
    depth = 1.0 / inv_depth[win]
    bary = lam * iz[wt] * depth[:, None]

    face_id.reshape(-1)[wp] = ids[wt]
    bary_out.reshape(-1, 3)[wp] = bary
    depth_out.reshape(-1)[wp] = depth
    return Raster(face_id, bary_out, depth_out)


def interpolate(raster: Raster, faces: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Per-vertex attributes (N, C) interpolated at the covered pixels, in row-major pixel order: (P, C)."""
    mask = raster.covered
    tri = faces[raster.face_id[mask]]  # (P, 3)
    b = raster.bary[mask].astype(np.float32)
    attr = attributes[tri]  # (P, 3, C)
    return np.einsum("pk,pkc->pc", b, attr)

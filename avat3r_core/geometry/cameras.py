"""Pinhole cameras: one immutable type that every stage projects, crops and resizes with.

Keeping all the image-space bookkeeping (crop offsets, resize factors, head-centric extrinsics, unit
changes) in one validated class means the preprocessing stages cannot drift apart in conventions.

Conventions (DESIGN.md):

* OpenCV camera axes: x right, y down, z forward. ``w2c`` is a 4x4 float64 world-to-camera transform.
* ``K`` is 3x3, in pixel units of the image the camera belongs to (``width`` x ``height``).
* Continuous pixel coordinates put the image's top-left *corner* at ``(u, v) = (0, 0)``; pixel
  (row ``i``, column ``j``) therefore has its centre at ``(j + 0.5, i + 0.5)``, and an image of width
  ``W`` spans ``u`` in ``[0, W]``. With this convention resizing an image by a factor ``s`` (area
  semantics: the image borders map onto each other) scales ``fx, fy, cx, cy`` exactly by ``s``, and
  cropping at ``(x0, y0)`` subtracts ``x0, y0`` from ``cx, cy``. Calibrations that use the "pixel
  centre at integer coordinates" convention must add 0.5 to ``cx, cy`` when they are read.
* Metres everywhere inside the pipeline; ``with_units`` converts at the readers.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

_ROT_TOL = 1e-6


def _as_size(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"Camera: {name} must be an integer, got a bool")
    try:
        size = operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(f"Camera: {name} must be an integer, got {value!r}") from exc
    if size <= 0:
        raise ValueError(f"Camera: {name} must be positive, got {size}")
    return size


def _frozen_copy(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Camera:
    """A validated pinhole camera; all methods return new cameras (instances are immutable).

    ``eq=False``: equality is identity, since element-wise array comparison has no single truth value;
    use :meth:`allclose` to compare two cameras numerically.
    """

    K: np.ndarray
    w2c: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        try:
            K = np.asarray(self.K, dtype=np.float64)
            w2c = np.asarray(self.w2c, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Camera: K and w2c must be numeric arrays ({exc})") from exc
        if K.shape != (3, 3):
            raise ValueError(f"Camera: K must have shape (3, 3), got {K.shape}")
        if w2c.shape != (4, 4):
            raise ValueError(f"Camera: w2c must have shape (4, 4), got {w2c.shape}")
        if not np.all(np.isfinite(K)):
            raise ValueError("Camera: K contains non-finite values")
        if not np.all(np.isfinite(w2c)):
            raise ValueError("Camera: w2c contains non-finite values")
        if not np.allclose(K[2], [0.0, 0.0, 1.0], rtol=0.0, atol=_ROT_TOL):
            raise ValueError(f"Camera: K's last row must be [0, 0, 1], got {K[2].tolist()}")
        if K[0, 0] <= 0.0 or K[1, 1] <= 0.0:
            raise ValueError(f"Camera: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        if not np.allclose(w2c[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=_ROT_TOL):
            raise ValueError(f"Camera: w2c's last row must be [0, 0, 0, 1], got {w2c[3].tolist()}")
        rotation = w2c[:3, :3]
        ortho_err = float(np.max(np.abs(rotation @ rotation.T - np.eye(3))))
        if ortho_err > _ROT_TOL:
            raise ValueError(f"Camera: w2c rotation is not orthonormal (max |R R^T - I| = {ortho_err:.3g})")
        det = float(np.linalg.det(rotation))
        if abs(det - 1.0) > _ROT_TOL:
            raise ValueError(f"Camera: w2c rotation must have determinant +1, got {det:.6g}")
        object.__setattr__(self, "K", _frozen_copy(K))
        object.__setattr__(self, "w2c", _frozen_copy(w2c))
        object.__setattr__(self, "width", _as_size(self.width, "width"))
        object.__setattr__(self, "height", _as_size(self.height, "height"))

    # ------------------------------------------------------------------ extrinsic views
    @property
    def R(self) -> np.ndarray:
        """World-to-camera rotation (3, 3)."""
        return self.w2c[:3, :3].copy()

    @property
    def t(self) -> np.ndarray:
        """World-to-camera translation (3,)."""
        return self.w2c[:3, 3].copy()

    @property
    def c2w(self) -> np.ndarray:
        """Camera-to-world transform (4, 4), inverted exactly using the rotation's transpose."""
        rotation = self.w2c[:3, :3]
        out = np.eye(4)
        out[:3, :3] = rotation.T
        out[:3, 3] = -rotation.T @ self.w2c[:3, 3]
        return out

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (3,)."""
        return -self.w2c[:3, :3].T @ self.w2c[:3, 3]

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction (camera +z axis) in world coordinates (3,)."""
        z = self.w2c[2, :3].copy()
        return z / np.linalg.norm(z)

    # ------------------------------------------------------------------ projection
    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points (N, 3) to continuous pixel coordinates.

        Returns ``(uv (N, 2), depth (N,))`` where depth is the camera-space z. Points behind the camera
        still get a uv (mirrored); callers must check ``depth > 0``. Points with depth 0 give inf/nan.
        """
        pts = _as_points(points, "project")
        cam = pts @ self.w2c[:3, :3].T + self.w2c[:3, 3]
        depth = cam[:, 2].copy()
        pix = cam @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = pix[:, :2] / pix[:, 2:3]
        return uv, depth

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """World points (N, 3) at camera-space depth ``depth`` (N,) along the pixels ``uv`` (N, 2)."""
        uv = np.asarray(uv, dtype=np.float64)
        depth = np.asarray(depth, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"unproject: uv must have shape (N, 2), got {uv.shape}")
        if depth.shape != (uv.shape[0],):
            raise ValueError(f"unproject: depth must have shape ({uv.shape[0]},), got {depth.shape}")
        homo = np.concatenate([uv, np.ones((uv.shape[0], 1))], axis=1)
        cam = np.linalg.solve(self.K, homo.T).T * depth[:, None]
        return (cam - self.w2c[:3, 3]) @ self.w2c[:3, :3]

    # ------------------------------------------------------------------ image-space edits
    def crop(self, x0: float, y0: float, width: int, height: int) -> Camera:
        """Camera of the window ``[x0, x0 + width) x [y0, y0 + height)`` of this image.

        The window may extend past the image (e.g. negative ``x0``), which is how black padding is
        expressed: the intrinsics do not care whether the pixels exist.
        """
        K = np.array(self.K)
        K[0, 2] -= float(x0)
        K[1, 2] -= float(y0)
        return Camera(K=K, w2c=self.w2c, width=width, height=height)

    def resize(self, width: int, height: int) -> Camera:
        """Camera of this image resampled to ``width`` x ``height`` (row 0 of K scaled by
        ``width / self.width``, row 1 by ``height / self.height``)."""
        width = _as_size(width, "width")
        height = _as_size(height, "height")
        K = np.array(self.K)
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(K=K, w2c=self.w2c, width=width, height=height)

    def scaled_to(self, width: int, height: int) -> Camera:
        """Same as :meth:`resize`; reads better where a calibration stored at sensor resolution is
        adapted to the (possibly downsampled) image actually delivered."""
        return self.resize(width, height)

    def crop_and_resize(
        self, x0: float, y0: float, crop_w: int, crop_h: int, out_w: int, out_h: int
    ) -> Camera:
        """:meth:`crop` to ``crop_w`` x ``crop_h`` at ``(x0, y0)``, then :meth:`resize` to
        ``out_w`` x ``out_h``."""
        return self.crop(x0, y0, crop_w, crop_h).resize(out_w, out_h)

    # ------------------------------------------------------------------ frame / unit changes
    def to_head_centric(self, head_to_world: np.ndarray) -> Camera:
        """Camera whose world frame is the head frame: ``w2c_head = w2c @ head_to_world``.

        Projecting a head-local point through the result equals projecting ``head_to_world @ point``
        through this camera. ``head_to_world`` must be rigid (no scale), else ValueError.
        """
        h2w = np.asarray(head_to_world, dtype=np.float64)
        if h2w.shape != (4, 4):
            raise ValueError(f"to_head_centric: head_to_world must have shape (4, 4), got {h2w.shape}")
        return Camera(K=self.K, w2c=self.w2c @ h2w, width=self.width, height=self.height)

    def with_units(self, scale: float) -> Camera:
        """Camera for a world whose lengths are multiplied by ``scale`` (e.g. 1e-3 for mm -> m)."""
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0.0:
            raise ValueError(f"with_units: scale must be positive and finite, got {scale}")
        w2c = np.array(self.w2c)
        w2c[:3, 3] *= scale
        return Camera(K=self.K, w2c=w2c, width=self.width, height=self.height)

    def allclose(self, other: Camera, atol: float = 1e-9) -> bool:
        """Numerical equality of intrinsics, extrinsics and size."""
        return (
            self.width == other.width
            and self.height == other.height
            and bool(np.allclose(self.K, other.K, rtol=0.0, atol=atol))
            and bool(np.allclose(self.w2c, other.w2c, rtol=0.0, atol=atol))
        )


def _as_points(points: np.ndarray, where: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"{where}: points must have shape (N, 3), got {pts.shape}")
    return pts


def pixel_centers(width: int, height: int) -> np.ndarray:
    """Continuous uv of every pixel centre, shape (H, W, 2): ``[i, j] == (j + 0.5, i + 0.5)``."""
    width = _as_size(width, "width")
    height = _as_size(height, "height")
    u = np.arange(width, dtype=np.float64) + 0.5
    v = np.arange(height, dtype=np.float64) + 0.5
    uu, vv = np.meshgrid(u, v, indexing="xy")
    return np.stack([uu, vv], axis=-1)

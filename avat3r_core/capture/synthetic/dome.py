"""The capture dome: camera ids, calibration (native Ava-256 sensor intrinsics, world-to-camera in mm), and
the empty-dome background plates.

The nominal dome is shared by all subjects of a config (like the real rig), and each capture gets a small
recalibration jitter, as a real dome drifts between sessions. World frame: millimetres, +y up, the head sits
near HEAD_CENTRE_MM (about 1 m from the world origin, like Ava-256's scene centre) and faces world -z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avat3r_core.geometry.transforms import look_at_w2c, rotation_from_axis_angle

from .config import NATIVE_HEIGHT, NATIVE_WIDTH, SyntheticConfig, shared_rng, subject_rng

HEAD_CENTRE_MM = np.array([-60.0, 30.0, 990.0])
WORLD_UP = np.array([0.0, 1.0, 0.0])
ELEVATION_DEG = (-20.0, 40.0)
RADIUS_MM = (1000.0, 1300.0)
HEAD_FRACTION = 0.45
"""Target fraction of the image height taken by the head (chin to top of the hair, ~250 mm)."""


@dataclass(frozen=True)
class Dome:
    """Calibration of one capture: ids (C,), native K (C, 3, 3), world-to-camera (C, 4, 4) in mm."""

    camera_ids: list[str]
    k_native: np.ndarray
    w2c_mm: np.ndarray

    @property
    def centres_mm(self) -> np.ndarray:
        """Camera centres in world mm, (C, 3)."""
        rot, t = self.w2c_mm[:, :3, :3], self.w2c_mm[:, :3, 3]
        return -np.einsum("cji,cj->ci", rot, t)


def camera_ids(cfg: SyntheticConfig) -> list[str]:
    """Distinct sorted 6-digit camera ids in the 400xxx-402xxx range of the real release."""
    rng = shared_rng(cfg, "camera_ids")
    pool = max(3000, 4 * cfg.n_cameras)
    ids = np.sort(rng.choice(pool, size=cfg.n_cameras, replace=False)) + 400000
    return [f"{int(i):06d}" for i in ids]


def build_dome(cfg: SyntheticConfig, sid: str) -> Dome:
    """Nominal dome of the config plus this capture's recalibration jitter."""
    rng = shared_rng(cfg, "dome")
    n = cfg.n_cameras
    lo, hi = np.sin(np.deg2rad(ELEVATION_DEG))
    heights = lo + (hi - lo) * (np.arange(n) + rng.uniform(0.2, 0.8, size=n)) / n
    elevation = np.arcsin(heights)
    azimuth = rng.uniform(0, 2 * np.pi) + np.arange(n) * np.pi * (3.0 - np.sqrt(5.0))  # golden angle spiral
    radius = rng.uniform(*RADIUS_MM, size=n)
    order = rng.permutation(n)  # camera ids are not in spatial order in the real dome either
    elevation, azimuth, radius = elevation[order], azimuth[order], radius[order]
    aim = HEAD_CENTRE_MM + np.array([0.0, -20.0, 0.0]) + rng.normal(0.0, 12.0, size=(n, 3))
    focal = HEAD_FRACTION * NATIVE_HEIGHT * radius / 250.0 * rng.uniform(0.97, 1.03, size=n)
    principal = np.stack(
        [NATIVE_WIDTH / 2 + rng.normal(0, 15, n), NATIVE_HEIGHT / 2 + rng.normal(0, 15, n)], axis=-1
    )

    jitter = subject_rng(cfg, sid, "calibration")
    k_native = np.zeros((n, 3, 3))
    w2c = np.zeros((n, 4, 4))
    for c in range(n):
        direction = np.array(
            [
                np.cos(elevation[c]) * np.sin(azimuth[c]),
                np.sin(elevation[c]),
                np.cos(elevation[c]) * np.cos(azimuth[c]),
            ]
        )
        eye = HEAD_CENTRE_MM + radius[c] * direction + jitter.normal(0.0, 1.5, size=3)
        pose = look_at_w2c(eye, aim[c], WORLD_UP)
        tweak = rotation_from_axis_angle(jitter.normal(0.0, np.deg2rad(0.15), size=3))
        pose[:3, :3] = tweak @ pose[:3, :3]
        pose[:3, 3] = -pose[:3, :3] @ eye
        w2c[c] = pose
        f = focal[c] * jitter.uniform(0.998, 1.002)
        k_native[c] = [
            [f, 0.0, principal[c, 0] + jitter.normal(0, 1.0)],
            [0.0, f * (1.0 + jitter.normal(0, 5e-4)), principal[c, 1] + jitter.normal(0, 1.0)],
            [0.0, 0.0, 1.0],
        ]
    return Dome(camera_ids(cfg), k_native, w2c)


def background_plate(k: np.ndarray, w2c_mm: np.ndarray, height: int, width: int, seed: int) -> np.ndarray:
    """Empty-dome plate as seen by one camera, (H, W, 3) float32 in [0, 1].

    The dome is an environment at infinity (a function of the ray direction only): a dim floor-to-ceiling
    gradient, a lattice of light panels and dark beams. It is bluish grey and darker than skin, so plate
    difference matting works, yet not black, so that the matting stage has something to remove.
    """
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([jj, ii, np.ones_like(jj)], -1)
    rays = pix @ np.linalg.inv(k).T @ w2c_mm[:3, :3]  # camera rays rotated to world: R^T d
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    elev = np.arcsin(np.clip(rays[..., 1], -1, 1))
    azim = np.arctan2(rays[..., 0], rays[..., 2])
    g = 0.5 + 0.5 * np.tanh(rays[..., 1] * 1.8)
    floor, ceiling = np.array([0.16, 0.16, 0.17]), np.array([0.30, 0.34, 0.42])
    col = floor * (1 - g[..., None]) + ceiling * g[..., None]
    cell_az, cell_el = np.deg2rad(18.0), np.deg2rad(14.0)
    ca, ce = azim / cell_az, elev / cell_el
    ia, ie = np.floor(ca).astype(np.int64), np.floor(ce).astype(np.int64)
    fa, fe = ca - ia, ce - ie
    cell_hash = ((ia * 73856093) ^ (ie * 19349663) ^ seed) & 0xFFFF
    lit = (cell_hash % 5) < 2
    panel = (np.abs(fa - 0.5) < 0.34) & (np.abs(fe - 0.5) < 0.30) & lit & (elev > np.deg2rad(-25.0))
    brightness = 0.62 + 0.25 * ((cell_hash >> 4) % 16) / 15.0
    col = np.where(panel[..., None], np.array([0.86, 0.90, 1.0]) * brightness[..., None], col)
    beam = (np.minimum(fa, 1 - fa) < 0.035) | (np.minimum(fe, 1 - fe) < 0.04)
    col = np.where(beam[..., None], col * 0.35, col)
    return np.clip(col, 0.0, 1.0).astype(np.float32)

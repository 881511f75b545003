"""Rendering of one subject: the cached per-subject scene and the images + ground truth of one camera."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from avat3r_core.geometry.raster import rasterize

from .config import SyntheticConfig, image_size, scale_intrinsics, subject_rng
from .dome import Dome, background_plate, build_dome
from .head import TRACKED_PARTS, HeadModel, build_head, sample_identity
from .shading import detail_texture, shade, vertex_normals
from .timeline import Timeline, build_timeline

NOISE_SIGMA = 1.5
"""Sensor noise standard deviation in 8-bit levels, added to images and plates."""


@dataclass(frozen=True)
class SubjectScene:
    """Everything needed to render any camera of one subject, computed once per process."""

    sid: str
    model: HeadModel
    dome: Dome
    timeline: Timeline
    texture: np.ndarray
    verts_world: np.ndarray  # (F, N, 3) mm
    normals_world: np.ndarray  # (F, N, 3) float32
    tracked_local: np.ndarray  # (F, n_tracked, 3) mm, head-local
    height: int
    width: int

    def k_image(self, cam: int) -> np.ndarray:
        """Intrinsics of camera `cam` at the rendered image size (native K scaled by W/2668, H/4096)."""
        return scale_intrinsics(self.dome.k_native[cam], self.height, self.width)


@functools.lru_cache(maxsize=8)
def subject_scene(cfg: SyntheticConfig, sid: str) -> SubjectScene:
    """Build (and cache per process) the scene of one subject; deterministic in (cfg, sid)."""
    model = build_head(sample_identity(subject_rng(cfg, sid, "identity")), subject_rng(cfg, sid, "hair"))
    timeline = build_timeline(cfg, sid)
    n_frames = len(timeline.frame_ids)
    verts_world = np.zeros((n_frames, len(model.albedo), 3))
    normals_world = np.zeros((n_frames, len(model.albedo), 3), dtype=np.float32)
    tracked = np.zeros((n_frames, model.n_tracked, 3))
    for f in range(n_frames):
        local = model.render_vertices(timeline.weights[f])
        tracked[f] = local[: model.n_tracked]
        pose = timeline.head_to_world_mm[f]
        verts_world[f] = local @ pose[:3, :3].T + pose[:3, 3]
        normals_world[f] = vertex_normals(local, model.faces) @ pose[:3, :3].T.astype(np.float32)
    height, width = image_size(cfg.downsample)
    return SubjectScene(
        sid=sid,
        model=model,
        dome=build_dome(cfg, sid),
        timeline=timeline,
        texture=detail_texture(subject_rng(cfg, sid, "texture")),
        verts_world=verts_world,
        normals_world=normals_world,
        tracked_local=tracked,
        height=height,
        width=width,
    )


@dataclass(frozen=True)
class FrameRender:
    """One rendered (camera, frame): 8-bit RGB image, ground-truth alpha / depth (m) / tracked flags."""

    image: np.ndarray  # (H, W, 3) uint8, plate + foreground + noise
    alpha: np.ndarray  # (H, W) uint8 {0, 255}
    depth_m: np.ndarray  # (H, W) float32
    tracked: np.ndarray  # (H, W) bool


def clean_plate(scene: SubjectScene, cam: int) -> np.ndarray:
    """Noise-free background of camera `cam`, (H, W, 3) float32 in [0, 1]."""
    return background_plate(
        scene.k_image(cam), scene.dome.w2c_mm[cam], scene.height, scene.width, seed=int(cam) * 7919
    )


def to_uint8_with_noise(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Quantise [0, 1] colour to 8 bits with Gaussian sensor noise of NOISE_SIGMA levels."""
    noise = rng.standard_normal(size=rgb.shape, dtype=np.float32)
    noisy = rgb.astype(np.float32) * np.float32(255.0) + np.float32(NOISE_SIGMA) * noise + np.float32(0.5)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def render_frame(
    scene: SubjectScene, cam: int, frame: int, plate: np.ndarray, rng: np.random.Generator
) -> FrameRender:
    """Render frame index `frame` from camera index `cam` over the clean `plate`."""
    w2c = scene.dome.w2c_mm[cam]
    verts_cam = scene.verts_world[frame] @ w2c[:3, :3].T + w2c[:3, 3]
    raster = rasterize(verts_cam, scene.model.faces, scene.k_image(cam), scene.height, scene.width)
    mask = raster.covered
    colour, part = shade(scene.model, raster, scene.normals_world[frame], scene.texture)
    rgb = plate.copy()
    rgb[mask] = colour
    tracked = np.zeros(mask.shape, dtype=bool)
    tracked[mask] = np.isin(part, TRACKED_PARTS)
    return FrameRender(
        image=to_uint8_with_noise(rgb, rng),
        alpha=(mask.astype(np.uint8) * 255),
        depth_m=(raster.depth / 1000.0).astype(np.float32),
        tracked=tracked,
    )

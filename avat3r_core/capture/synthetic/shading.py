"""Per-pixel appearance of the rendered head: albedo, detail texture, irises, Lambertian light.

The detail texture matters for the pipeline rather than for looks: matting, DUSt3R and the crop stages need
image structure at pixel scale, which a smoothly shaded mesh would not give. Lighting is view-independent
(Lambertian, lights fixed in the world), so a surface point has the same colour in every camera.
"""

from __future__ import annotations

import numpy as np

from avat3r_core.geometry.raster import Raster

from .head import PART_EYE, PART_HAIR, PART_MOUTH, PART_SKIN, PART_TONGUE, PART_TORSO, HeadModel

LIGHTS_WORLD = (
    (np.array([0.35, 0.75, -1.0]), 0.50),  # key light above the face side (the head faces world -z)
    (np.array([-0.6, 0.35, 0.9]), 0.25),  # fill from behind, so back views are not flat
)
AMBIENT = 0.42
_DETAIL_AMPLITUDE = {PART_SKIN: 0.10, PART_EYE: 0.04, PART_MOUTH: 0.20, PART_TONGUE: 0.15, PART_HAIR: 0.55}
_DEFAULT_AMPLITUDE = 0.12
_TORSO_AMPLITUDE = 0.28


def detail_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """Tileable multi-octave value noise in [-1, 1], (size, size) float32, fine octaves included."""
    out = np.zeros((size, size))
    total = 0.0
    for cells, weight in ((4, 1.0), (16, 0.7), (64, 0.6), (256, 0.5)):
        if cells > size:
            continue
        grid = rng.uniform(-1.0, 1.0, size=(cells, cells))
        coords = np.arange(size) * cells / size
        i0 = np.floor(coords).astype(int)
        t = coords - i0
        t = t * t * (3 - 2 * t)
        i1 = (i0 + 1) % cells
        rows = grid[i0] * (1 - t)[:, None] + grid[i1] * t[:, None]
        out += weight * (rows[:, i0] * (1 - t)[None] + rows[:, i1] * t[None])
        total += weight
    out /= total
    return (out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (N, 3) float32; degenerate vertices get +z."""
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], fn)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(norm > 1e-12, normals / np.maximum(norm, 1e-12), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)


def shade(
    model: HeadModel, raster: Raster, normals_world: np.ndarray, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Colours of the covered pixels, (P, 3) float32 in [0, 1], and the part id of each (P,)."""
    mask = raster.covered
    fid = raster.face_id[mask]
    tri = model.faces[fid]
    b = raster.bary[mask]
    part = model.face_part[fid]

    def interp(attr: np.ndarray) -> np.ndarray:
        return np.einsum("pk,pkc->pc", b, attr[tri])

    albedo = interp(model.albedo)
    uv = interp(model.uv)
    normal = interp(normals_world)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-6)

    eye = part == PART_EYE
    if np.any(eye):
        d = interp(model.eye_dir[:, :])[eye]
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
        cos_axis = d[:, 2]
        angle = np.arctan2(d[:, 1], d[:, 0])
        iris = cos_axis > np.cos(np.deg2rad(36.0))
        streak = 0.75 + 0.25 * np.sin(angle * 23.0) * np.sin(angle * 7.0 + 1.0)
        limbal = 1.0 - 0.5 * np.clip((np.cos(np.deg2rad(30.0)) - cos_axis) / 0.08, 0, 1)
        col = albedo[eye]
        col[iris] = model.ident.iris * (streak[iris] * limbal[iris])[:, None]
        col[cos_axis > np.cos(np.deg2rad(14.0))] = 0.03
        albedo[eye] = col

    size = texture.shape[0]
    tu = np.mod(np.floor(uv[:, 0] * size).astype(np.int64), size)
    tv = np.mod(np.floor(uv[:, 1] * size).astype(np.int64), size)
    noise = texture[tv, tu]
    amplitude = np.full(len(part), _DEFAULT_AMPLITUDE, dtype=np.float32)
    for key, value in _DETAIL_AMPLITUDE.items():
        amplitude[part == key] = value
    amplitude[part == PART_TORSO] = _TORSO_AMPLITUDE
    hair = part == PART_HAIR
    # Hair strands: sample the noise stretched along the strand direction (v) for streaks.
    if np.any(hair):
        noise[hair] = texture[np.mod(tv[hair] // 16, size), tu[hair]] * 0.6 + 0.4 * noise[hair]
    albedo = albedo * (1.0 + amplitude * noise)[:, None]

    light = np.full(len(part), AMBIENT, dtype=np.float32)
    for direction, strength in LIGHTS_WORLD:
        ld = direction / np.linalg.norm(direction)
        light += strength * np.clip(normal @ ld, 0.0, None)
    colour = np.clip(albedo * light[:, None], 0.0, 1.0).astype(np.float32)
    return colour, part

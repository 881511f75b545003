"""Stage `crop`: head-centric square crops of the input views and of the supervision views.

Each crop is cut from the matted image composited onto black (`matting.composite`: `image * alpha` or
BGMv2's `fgr * alpha`, premultiplied before any resampling so edges stay correct), carries its
intrinsics and its head-centric world-to-camera (`w2c @ head_to_world`: the head stays in canonical pose,
the cameras move), and its window in image pixels. Input crops (512 px at the 4TB release's 1024x667)
are stored lossless; supervision crops (667 px, every camera at every supervision timestep, which would be
~0.5 TB per Ava-256 subject raw) are AVIF-coded inside the Zarr store (benchmarks/supervision_storage.py).
Windows are centred on the projected head centre and padded with black where they leave the image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avat3r_core.capture.base import CaptureReader, cached_mesh
from avat3r_core.geometry.crops import CropWindow, cut_crop, input_window, supervision_window
from avat3r_core.matting.composite import alpha_to_uint8, composite_on_black
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.store.zarr_store import open_store, write_store

log = logging.getLogger(__name__)


class _MattingStore:
    """Alpha (and foreground) of one subject by (camera, frame), read one shard block at a time."""

    def __init__(self, path: str | Path) -> None:
        group = open_store(path)
        self.alpha = group["alpha"]
        self.foreground = group.get("foreground", None)
        self.valid = group["valid"][...]
        self.camera = {str(c): i for i, c in enumerate(group["camera_ids"][...])}
        self.frame = {int(f): i for i, f in enumerate(group["frames"][...])}

    def has(self, camera: str, frame: int) -> bool:
        return frame in self.frame and bool(self.valid[self.camera[camera], self.frame[frame]])

    def get(self, camera: str, frame: int) -> tuple[np.ndarray, np.ndarray | None]:
        c, t = self.camera[camera], self.frame[frame]
        alpha = self.alpha[c, t].astype(np.float32) / 255.0
        fgr = self.foreground[c, t].astype(np.float32) / 255.0 if self.foreground is not None else None
        return alpha, fgr


def _window(kind: str, camera, index: CaptureIndex, cfg: dict[str, Any], vertices) -> CropWindow:
    if kind == "input":
        return input_window(
            camera,
            index.head_center,
            window_fraction=cfg["input_window"],
            out_size=cfg["input_size"],
            fit=cfg["input_fit"],
            vertices_head=vertices,
            margin=cfg["head_margin"],
        )
    return supervision_window(
        camera, index.head_center, window_fraction=cfg["supervision_window"], out_size=cfg["supervision_size"]
    )


def _cut(
    image: np.ndarray,
    matte: np.ndarray,
    foreground: np.ndarray | None,
    window: CropWindow,
    cfg: dict[str, Any],
    composite: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite onto black inside the window only, then resample.

    The same pixels as compositing the whole image first (compositing is per pixel and the padding is black
    with alpha 0), at a fraction of the cost.
    """
    exact = CropWindow(window.x0, window.y0, window.size, window.size)
    fgr = cut_crop(foreground, exact) if foreground is not None else None
    matte = cut_crop(matte, exact)
    rgb = composite_on_black(cut_crop(image, exact), matte, fgr, mode=composite)
    if window.resampled:
        resize = CropWindow(0, 0, window.size, window.out_size)
        rgb = cut_crop(rgb, resize, resample=cfg["resample"])
        matte = cut_crop(matte, resize, resample=cfg["resample"])
    return rgb, alpha_to_uint8(matte)


def _write_set(
    store,
    kind: str,
    reader: CaptureReader,
    index: CaptureIndex,
    matting: _MattingStore,
    cameras: list[str],
    frames: list[int],
    wanted: set[tuple[str, int]],
    cfg: dict[str, Any],
    composite: str,
    bar: tqdm,
) -> int:
    """Crop every wanted (camera, frame) of one set ('input' or 'supervision') into `{kind}/...` arrays."""
    size = cfg["input_size"] if kind == "input" else cfg["supervision_size"]
    codec = "zstd" if kind == "input" else cfg["supervision_codec"]
    n_c, n_t = len(cameras), len(frames)
    block = cfg["images_per_shard"]
    rgb = store.create_images(
        f"{kind}/rgb",
        (n_c, n_t, size, size, 3),
        codec=codec,
        quality=cfg["supervision_quality"],
        images_per_shard=block,
    )
    alpha = store.create_images(f"{kind}/alpha", (n_c, n_t, size, size), images_per_shard=block)
    K = np.zeros((n_c, n_t, 3, 3))
    w2c = np.zeros((n_c, n_t, 4, 4))
    windows = np.zeros((n_c, n_t, 4), dtype=np.int64)
    valid = np.zeros((n_c, n_t), dtype=bool)
    meshes: dict[int, np.ndarray] = {}
    for c, camera in enumerate(cameras):
        for start in range(0, n_t, block):
            span = frames[start : start + block]
            rgbs = np.zeros((len(span), size, size, 3), dtype=np.uint8)
            alphas = np.zeros((len(span), size, size), dtype=np.uint8)
            for i, frame in enumerate(span):
                t = start + i
                if (camera, frame) not in wanted:
                    continue
                bar.update(1)
                if not matting.has(camera, frame):
                    continue  # blank or missing mask: counted by the matting stage
                head_camera = index.head_centric(camera, frame)
                vertices = None
                if kind == "input" and cfg["input_fit"] == "head_extent":
                    vertices = cached_mesh(reader, meshes, frame)
                window = _window(kind, head_camera, index, cfg, vertices)
                rgbs[i], alphas[i] = _cut(
                    reader.image(camera, frame), *matting.get(camera, frame), window, cfg, composite
                )
                crop_camera = window.camera(head_camera)
                K[c, t], w2c[c, t] = crop_camera.K, crop_camera.w2c
                windows[c, t] = (window.x0, window.y0, window.size, window.out_size)
                valid[c, t] = True
            rgb[c, start : start + len(span)] = rgbs
            alpha[c, start : start + len(span)] = alphas
    store.write_array(f"{kind}/K", K)
    store.write_array(f"{kind}/w2c_head", w2c)
    store.write_array(f"{kind}/window", windows, attrs={"columns": ["x0", "y0", "size", "out_size"]})
    store.write_array(f"{kind}/valid", valid)
    store.write_array(f"{kind}/camera_ids", np.asarray(cameras))
    store.write_array(f"{kind}/frames", np.asarray(frames, dtype=np.int64))
    return int(valid.sum())


def run_crop(
    reader: CaptureReader,
    index: CaptureIndex,
    frames: dict[str, Any],
    views: dict[str, Any],
    matting_path: str | Path,
    cfg: dict[str, Any],
    composite: str,
    out: str | Path,
    *,
    progress: bool = True,
) -> dict[str, int]:
    subject = reader.subject
    matting = _MattingStore(matting_path)
    input_cameras = list(views["input_cameras"])
    input_frames = [int(f) for f, _ in frames["input"]]
    input_wanted = {(c, int(f)) for c, f in views["input_views"]}
    sup_frames = [int(f) for f in frames["supervision"]]
    sup_wanted = {(c, f) for c in index.camera_ids for f in sup_frames if index.has_image(c, f)}
    bar = tqdm(
        total=len(input_wanted) + len(sup_wanted), desc=f"{subject} crops", unit="img", disable=not progress
    )
    with write_store(
        out, stage="crop", subject=subject, config=cfg, extra_attrs={"composite": composite}
    ) as store:
        n_input = _write_set(
            store,
            "input",
            reader,
            index,
            matting,
            input_cameras,
            input_frames,
            input_wanted,
            cfg,
            composite,
            bar,
        )
        n_sup = _write_set(
            store,
            "supervision",
            reader,
            index,
            matting,
            index.camera_ids,
            sup_frames,
            sup_wanted,
            cfg,
            composite,
            bar,
        )
        counts = {"input_crops": n_input, "supervision_crops": n_sup}
        store.set_attrs(summary=counts)
    bar.close()
    log.info(
        "subject %s: %d input crops (%d px, %s window) and %d supervision crops (%d px, %s); background: %s",
        subject,
        n_input,
        cfg["input_size"],
        cfg["input_fit"],
        n_sup,
        cfg["supervision_size"],
        cfg["supervision_codec"],
        "image * alpha" if composite == "src" else "fgr * alpha",
    )
    return counts

"""Stage `crop`: head-centric square crops of the input views and of the supervision views.

Each crop is cut from the matted image composited onto black (`matting.composite`: `image * alpha` or
BGMv2's `fgr * alpha`, premultiplied before any resampling so edges stay correct), carries its
intrinsics and its head-centric world-to-camera (`w2c @ head_to_world`: the head stays in canonical pose,
the cameras move), and its window in image pixels. Input crops (512 px at the 4TB release's 1024x667)
are stored lossless; supervision crops (667 px, every camera at every supervision timestep, which would be
~0.5 TB per Ava-256 subject raw) are JPEG- (default) or AVIF-coded inside the Zarr store
(`crop.supervision_codec`, benchmarks/supervision_storage.py).
Windows are centred on the projected head centre and padded with black where they leave the image.

Cost: each image is decoded once per job. The stage walks the cameras, and for each camera the frames any
crop set wants in time order, and cuts the input and the supervision crops from that one decode; the alpha
comes from the matting store a whole shard at a time, the composite is computed in integers (bit-identical
to the float composite, `premultiply`) once per image over the subject's bounding box, which all the crops of
that image copy from, and every block of crops is written as one shard. The matting
stage's `dataset` backend does not decode images, so blank images (`matting.bad_image`, read from the
matting store's config) are caught here: skipped and counted, or an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avat3r_core.capture.base import CaptureReader, cached_mesh
from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.crops import CropWindow, cut_crop, input_window, supervision_window
from avat3r_core.matting.composite import alpha_to_uint8, composite_on_black, premultiply
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.stages.matting import blank_image_error, is_blank
from avat3r_core.store.zarr_store import StoreWriter, open_store, read_block, write_store

log = logging.getLogger(__name__)
Region = tuple[slice, slice]
"""Rows and columns of a crop slot."""
NOTHING: Region = (slice(0, 0), slice(0, 0))


class _MattingStore:
    """Alpha (and foreground) of one subject by (camera, frame); alpha is read a whole shard at a time."""

    def __init__(self, path: str | Path) -> None:
        group = open_store(path)
        self.alpha = group["alpha"]
        self.foreground = group.get("foreground", None)
        self.valid = group["valid"][...]
        self.camera = {str(c): i for i, c in enumerate(group["camera_ids"][...])}
        self.frame = {int(f): i for i, f in enumerate(group["frames"][...])}
        self.bad_image = dict(group.attrs.get("config") or {}).get("bad_image", "skip")
        shards = self.alpha.shards
        self.block = int(shards[1]) if shards is not None else int(self.alpha.shape[1])
        self._cached: tuple[tuple[int, int], np.ndarray] | None = None

    def has(self, camera: str, frame: int) -> bool:
        return frame in self.frame and bool(self.valid[self.camera[camera], self.frame[frame]])

    def alpha_uint8(self, camera: str, frame: int) -> np.ndarray:
        """The stored uint8 alpha (H, W); the shard holding it is read whole and kept for the next frames."""
        c, t = self.camera[camera], self.frame[frame]
        key = (c, t // self.block)
        if self._cached is None or self._cached[0] != key:
            start = key[1] * self.block
            stop = min(start + self.block, self.alpha.shape[1])
            self._cached = (key, read_block(self.alpha, (c, slice(start, stop))))
        return self._cached[1][t - key[1] * self.block]

    def foreground_float(self, camera: str, frame: int) -> np.ndarray | None:
        if self.foreground is None:
            return None
        return self.foreground[self.camera[camera], self.frame[frame]].astype(np.float32) / 255.0


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
    alpha: np.ndarray,
    foreground: np.ndarray | None,
    window: CropWindow,
    cfg: dict[str, Any],
    composite: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite onto black inside the window only, then resample; `alpha` is the stored uint8 alpha.

    The same pixels as compositing the whole image with the float alpha (alpha / 255) first: compositing is
    per pixel, the padding is black with alpha 0, and `premultiply` is the float composite bit for bit.
    """
    exact = CropWindow(window.x0, window.y0, window.size, window.size)
    matte = cut_crop(alpha, exact)
    if composite == "src":
        rgb = premultiply(cut_crop(image, exact), matte)
    else:
        fgr = cut_crop(foreground, exact) if foreground is not None else None
        rgb = composite_on_black(
            cut_crop(image, exact), matte.astype(np.float32) / 255.0, fgr, mode=composite
        )
    if not window.resampled:
        return rgb, matte
    resize = CropWindow(0, 0, window.size, window.out_size)
    rgb = cut_crop(rgb, resize, resample=cfg["resample"])
    return rgb, alpha_to_uint8(cut_crop(matte.astype(np.float32) / 255.0, resize, resample=cfg["resample"]))


def _fast(window: CropWindow, composite: str) -> bool:
    """Whether `_cut_into` cuts this window by copying premultiplied pixels (no resampling, composite src)."""
    return not window.resampled and composite == "src"


def _premultiplied_box(
    image: np.ndarray, alpha: np.ndarray, windows: list[CropWindow]
) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """(row, col, image * alpha, alpha) over the bounding box of the non-zero alpha inside the union of the
    windows (clipped to the image), computed once for all the crops of an image; None if that is empty.

    Outside the box alpha is 0, so every crop is black there; inside, a crop is a copy of this box (the input
    and the supervision windows of an image overlap almost entirely, so compositing once saves the second).
    """
    height, width = alpha.shape
    y0 = max(min(w.y0 for w in windows), 0)
    x0 = max(min(w.x0 for w in windows), 0)
    y1 = min(max(w.y0 + w.size for w in windows), height)
    x1 = min(max(w.x0 + w.size for w in windows), width)
    if y1 <= y0 or x1 <= x0:
        return None
    matte = alpha[y0:y1, x0:x1]
    rows = np.flatnonzero(matte.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(matte.any(axis=0))
    r0, r1, c0, c1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1, x0 + int(cols[0]), x0 + int(cols[-1]) + 1
    box = alpha[r0:r1, c0:c1]
    return r0, c0, premultiply(image[r0:r1, c0:c1], box), box


def _cut_into(
    rgb_out: np.ndarray,
    alpha_out: np.ndarray,
    image: np.ndarray,
    alpha: np.ndarray,
    foreground: np.ndarray | None,
    window: CropWindow,
    cfg: dict[str, Any],
    composite: str,
    premultiplied: tuple[int, int, np.ndarray, np.ndarray] | None = None,
) -> Region | None:
    """`_cut` written into zeroed output slots. Without resampling and with composite "src" (`_fast`), only
    the bounding box of the non-zero alpha is composited and copied: outside it alpha is 0, so the crop is
    black there whatever the image holds, which the zeroed slots already are (same pixels as `_cut`; a third
    to a half of a crop is background). `premultiplied` is `_premultiplied_box` of the image's windows (it
    is computed here, for this window alone, when not given). Returns the region of the slots it wrote
    (None: all of it)."""
    if not _fast(window, composite):
        rgb_out[...], alpha_out[...] = _cut(image, alpha, foreground, window, cfg, composite)
        return None
    if premultiplied is None:
        premultiplied = _premultiplied_box(image, alpha, [window])
        if premultiplied is None:
            return NOTHING
    r0, c0, rgb, box = premultiplied
    y0, x0 = max(window.y0, r0), max(window.x0, c0)
    y1 = min(window.y0 + window.size, r0 + box.shape[0])
    x1 = min(window.x0 + window.size, c0 + box.shape[1])
    if y1 <= y0 or x1 <= x0:
        return NOTHING  # the window misses the subject: all black
    source = (slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
    target = (slice(y0 - window.y0, y1 - window.y0), slice(x0 - window.x0, x1 - window.x0))
    alpha_out[target] = box[source]
    rgb_out[target] = rgb[source]
    return target


class _CropSet:
    """One set of crops ('input' or 'supervision') being written into `{kind}/...` arrays.

    Crops arrive camera by camera and, within a camera, in time order; a block of `images_per_shard`
    timesteps is written as one shard as soon as its last wanted crop is done, so memory holds about one
    block per set and the shards are written in C order (hashed for the manifest as they are written).
    """

    def __init__(
        self,
        store: StoreWriter,
        kind: str,
        cameras: list[str],
        frames: list[int],
        wanted: set[tuple[str, int]],
        cfg: dict[str, Any],
    ) -> None:
        self.kind, self.cameras, self.frames, self.wanted = kind, cameras, frames, wanted
        self.size = cfg["input_size"] if kind == "input" else cfg["supervision_size"]
        self.block = cfg["images_per_shard"]
        self.camera_index = {camera: c for c, camera in enumerate(cameras)}
        n_c, n_t = len(cameras), len(frames)
        self.rgb = store.create_images(
            f"{kind}/rgb",
            (n_c, n_t, self.size, self.size, 3),
            codec="zstd" if kind == "input" else cfg["supervision_codec"],
            quality=cfg["supervision_quality"],
            images_per_shard=self.block,
        )
        self.alpha = store.create_images(
            f"{kind}/alpha", (n_c, n_t, self.size, self.size), images_per_shard=self.block
        )
        self.K = np.zeros((n_c, n_t, 3, 3))
        self.w2c = np.zeros((n_c, n_t, 4, 4))
        self.windows = np.zeros((n_c, n_t, 4), dtype=np.int64)
        self.valid = np.zeros((n_c, n_t), dtype=bool)
        self._camera = -1
        self._pending: dict[int, int] = {}  # block -> wanted crops not done yet (current camera)
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # block -> (rgbs, alphas) being filled
        # block -> (column in block, region written or None for the whole slot): what to zero on reuse
        self._dirty: dict[int, list[tuple[int, Region | None]]] = {}
        # written blocks' buffers and what was written into them, reused (no page faults; only the written
        # regions are zeroed again, not the whole block: a third to a half of a crop is never written)
        self._spare: list[tuple[np.ndarray, np.ndarray, list[tuple[int, Region | None]]]] = []

    def begin_camera(self, camera: str) -> list[tuple[int, int]]:
        """(frame, column) of every crop this set wants from `camera`."""
        assert not self._pending, "the previous camera's blocks were not all written"
        if camera not in self.camera_index:
            return []
        self._camera = self.camera_index[camera]
        jobs = [(f, t) for t, f in enumerate(self.frames) if (camera, f) in self.wanted]
        for _, t in jobs:
            self._pending[t // self.block] = self._pending.get(t // self.block, 0) + 1
        return jobs

    def slots(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The zeroed (rgb, alpha) buffers of column `t` of the current camera, to cut a crop into."""
        b = t // self.block
        if b not in self._buffers:
            span = min(self.block, len(self.frames) - b * self.block)
            shape = (span, self.size, self.size)
            spare = next((i for i, (_, a, _) in enumerate(self._spare) if a.shape == shape), None)
            if spare is None:
                buffers = (np.zeros((*shape, 3), dtype=np.uint8), np.zeros(shape, dtype=np.uint8))
            else:
                rgbs, alphas, dirty = self._spare.pop(spare)
                for i, region in dirty:
                    where = (i,) if region is None else (i, *region)
                    rgbs[where], alphas[where] = 0, 0
                buffers = (rgbs, alphas)
            self._buffers[b] = buffers
            self._dirty[b] = []
        rgbs, alphas = self._buffers[b]
        return rgbs[t - b * self.block], alphas[t - b * self.block]

    def put(self, t: int, camera: Camera, window: CropWindow, written: Region | None = None) -> None:
        """The crop of column `t` is in its slots: record its camera and window. `written`: the region of the
        slots that was written (None: maybe all of it), zeroed again before the buffers are reused."""
        b = t // self.block
        self._dirty[b].append((t - b * self.block, written))
        c = self._camera
        self.K[c, t], self.w2c[c, t] = camera.K, camera.w2c
        self.windows[c, t] = (window.x0, window.y0, window.size, window.out_size)
        self.valid[c, t] = True
        self.done(t)

    def done(self, t: int) -> None:
        """One wanted crop is finished (put, or skipped: no valid matte or a blank image)."""
        b = t // self.block
        self._pending[b] -= 1
        if self._pending[b]:
            return
        del self._pending[b]
        buffers = self._buffers.pop(b, None)
        dirty = self._dirty.pop(b, [])
        if buffers is not None:  # a block without a valid crop stays unwritten: zeros, like the fill value
            start = b * self.block
            self.rgb[self._camera, start : start + len(buffers[0])] = buffers[0]
            self.alpha[self._camera, start : start + len(buffers[1])] = buffers[1]
            self._spare.append((*buffers, dirty))

    def write_small(self, store: StoreWriter) -> int:
        kind = self.kind
        store.write_array(f"{kind}/K", self.K)
        store.write_array(f"{kind}/w2c_head", self.w2c)
        store.write_array(f"{kind}/window", self.windows, attrs={"columns": ["x0", "y0", "size", "out_size"]})
        store.write_array(f"{kind}/valid", self.valid)
        store.write_array(f"{kind}/camera_ids", np.asarray(self.cameras))
        store.write_array(f"{kind}/frames", np.asarray(self.frames, dtype=np.int64))
        return int(self.valid.sum())


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
    blank = 0
    meshes: dict[int, np.ndarray] = {}
    with write_store(
        out, stage="crop", subject=subject, config=cfg, extra_attrs={"composite": composite}
    ) as store:
        sets = [
            _CropSet(store, "input", input_cameras, input_frames, input_wanted, cfg),
            _CropSet(store, "supervision", index.camera_ids, sup_frames, sup_wanted, cfg),
        ]
        cameras = list(index.camera_ids) + [c for c in input_cameras if c not in set(index.camera_ids)]
        for camera in cameras:
            jobs: dict[int, list[tuple[_CropSet, int]]] = {}
            for crop_set in sets:
                for frame, t in crop_set.begin_camera(camera):
                    jobs.setdefault(frame, []).append((crop_set, t))
            for frame in sorted(jobs):
                crops = jobs[frame]
                bar.update(len(crops))
                image = reader.image(camera, frame) if matting.has(camera, frame) else None
                if image is not None and is_blank(image):
                    if matting.bad_image == "error":
                        raise blank_image_error(subject, camera, frame)
                    log.warning(
                        "subject %s, camera %s, frame %d: blank image skipped", subject, camera, frame
                    )
                    blank += 1
                    image = None
                if image is None:  # no valid matte (blank or no mask: counted by the matting stage) or blank
                    for crop_set, t in crops:
                        crop_set.done(t)
                    continue
                alpha = matting.alpha_uint8(camera, frame)
                foreground = matting.foreground_float(camera, frame) if composite == "fgr" else None
                head_camera = index.head_centric(camera, frame)
                windows = []
                for crop_set, _ in crops:
                    vertices = None
                    if crop_set.kind == "input" and cfg["input_fit"] == "head_extent":
                        vertices = cached_mesh(reader, meshes, frame)
                    windows.append(_window(crop_set.kind, head_camera, index, cfg, vertices))
                fast = [window for window in windows if _fast(window, composite)]
                box = _premultiplied_box(image, alpha, fast) if fast else None
                for (crop_set, t), window in zip(crops, windows, strict=True):
                    slots = crop_set.slots(t)
                    written = NOTHING  # the subject is outside every fast window: black
                    if box is not None or not _fast(window, composite):
                        written = _cut_into(*slots, image, alpha, foreground, window, cfg, composite, box)
                    crop_set.put(t, window.camera(head_camera), window, written)
        n_input, n_sup = (crop_set.write_small(store) for crop_set in sets)
        counts = {"input_crops": n_input, "supervision_crops": n_sup, "blank": blank}
        store.set_attrs(summary=counts)
    bar.close()
    log.info(
        "subject %s: %d input crops (%d px, %s window) and %d supervision crops (%d px, %s); "
        "background: %s%s",
        subject,
        n_input,
        cfg["input_size"],
        cfg["input_fit"],
        n_sup,
        cfg["supervision_size"],
        cfg["supervision_codec"],
        "image * alpha" if composite == "src" else "fgr * alpha",
        f"; {blank} blank images skipped" if blank else "",
    )
    return counts

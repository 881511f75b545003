"""Stage `matting`: an alpha matte for every (camera, timestep) that a later stage crops.

Those are the input views (front-facing cameras at input timesteps, from views.json) and every camera at
the supervision timesteps. Alphas are stored at the capture's resolution, uint8, one chunk per image,
sharded per camera (in blocks of `images_per_shard` timesteps so memory stays bounded at Ava-256 scale).
Backends: `plate_difference` (classical, no weights), `bgmv2` (BackgroundMattingV2 checkpoint), `dataset`
(the masks the capture ships). With `composite: fgr` the BGMv2 foreground is stored too, because the crop
stage then composites `fgr * alpha` instead of `image * alpha`.

The `dataset` backend decodes masks only, never the images: the shipped 8-bit mask is the stored alpha
exactly (`mask_to_alpha` then `alpha_to_uint8` is the identity on uint8), and decoding every image only to
find the blank ones (`bad_image`) would cost more than the whole stage (an image decode is ~3.5x a mask
decode). The crop stage, which decodes each image anyway, applies `matting.bad_image` to those images (it
reads this store's config); this stage then reports `blank` as None.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avat3r_core.capture.base import CaptureReader
from avat3r_core.errors import CaptureError, ConfigError, MissingImageError
from avat3r_core.matting.backends import make_matter, mask_to_alpha
from avat3r_core.matting.composite import alpha_to_uint8
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.store.zarr_store import write_store

log = logging.getLogger(__name__)
BLANK_LEVEL = (
    8  # an image whose brightest pixel is this dark is treated as blank (dead camera, dropped frame)
)


def is_blank(image: np.ndarray) -> bool:
    """A dead camera or dropped frame: no pixel brighter than BLANK_LEVEL."""
    return int(image.max(initial=0)) <= BLANK_LEVEL


def blank_image_error(subject: str, camera: str, frame: int) -> CaptureError:
    message = "image is blank (all black; config matting.bad_image=error)"
    return CaptureError(message, subject=subject, camera=camera, frame=frame)


def shipped_alpha(mask: np.ndarray) -> np.ndarray:
    """The stored uint8 alpha of a capture-shipped mask: ``alpha_to_uint8(mask_to_alpha(mask))``, which is the
    mask itself (checked for all 256 values by the tests), without the two float passes."""
    if mask.dtype != np.uint8:
        return alpha_to_uint8(mask_to_alpha(mask))  # raises the TypeError mask_to_alpha gives
    return mask


def needed_images(index: CaptureIndex, frames: dict[str, Any], views: dict[str, Any]) -> dict[str, list[int]]:
    """Frames to matte per camera: input views plus every camera at the supervision timesteps."""
    needed: dict[str, set[int]] = {camera: set() for camera in index.camera_ids}
    for camera, frame in views["input_views"]:
        needed[camera].add(int(frame))
    for frame in frames["supervision"]:
        for camera in index.camera_ids:
            if index.has_image(camera, frame):
                needed[camera].add(int(frame))
    return {camera: sorted(f) for camera, f in needed.items()}


def _groundtruth_alpha(groundtruth: Path | None, subject: str) -> Any:
    """A lookup (camera, frame) -> true alpha when the capture is synthetic, else None."""
    if groundtruth is None:
        return None
    folder = groundtruth / subject
    order = {int(f): i for i, f in enumerate(json.loads((folder / "meta.json").read_text())["frame_ids"])}
    cache: dict[str, np.ndarray] = {}

    def lookup(camera: str, frame: int) -> np.ndarray:
        if camera not in cache:
            cache.clear()  # one camera at a time: the stage walks cameras in order
            cache[camera] = np.load(folder / f"cam{camera}.npz")["alpha"]
        return cache[camera][order[frame]]

    return lookup


def run_matting(
    reader: CaptureReader,
    index: CaptureIndex,
    frames: dict[str, Any],
    views: dict[str, Any],
    cfg: dict[str, Any],
    out: str | Path,
    *,
    groundtruth: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    subject = reader.subject
    backend = cfg["backend"]
    if cfg["composite"] == "fgr" and backend != "bgmv2":
        raise ConfigError(
            "matting.composite", "'fgr' needs the bgmv2 backend (the only one predicting a foreground)"
        )
    matter = None if backend == "dataset" else make_matter(backend, cfg.get(backend) or {})
    description = "capture-shipped foreground masks" if matter is None else matter.description
    log.info("subject %s: matting backend %s", subject, description)

    needed = needed_images(index, frames, views)
    camera_ids = index.camera_ids
    all_frames = sorted({f for fs in needed.values() for f in fs})
    column = {f: t for t, f in enumerate(all_frames)}
    height, width = index.image_size
    block = cfg["images_per_shard"]
    truth = _groundtruth_alpha(groundtruth, subject)
    # blank: None with the dataset backend, whose images the crop stage checks (module docstring)
    counts: dict[str, Any] = {"matted": 0, "blank": 0 if matter is not None else None, "missing_mask": 0}
    ious: list[float] = []
    random_weights = "RANDOM WEIGHTS" in description

    with write_store(out, stage="matting", subject=subject, config=cfg) as store:
        shape = (len(camera_ids), len(all_frames), height, width)
        alpha_array = store.create_images("alpha", shape, images_per_shard=block)
        fgr_array = None
        if cfg["composite"] == "fgr":
            fgr_array = store.create_images(
                "foreground", (*shape, 3), codec="avif", quality=95, images_per_shard=block
            )
        valid = np.zeros(shape[:2], dtype=bool)
        bar = tqdm(
            total=sum(map(len, needed.values())), desc=f"{subject} matting", unit="img", disable=not progress
        )
        for c, camera in enumerate(camera_ids):
            wanted = set(needed[camera])
            plate = reader.background(camera) if matter is not None and matter.needs_plate else None
            for start in range(0, len(all_frames), block):
                span = all_frames[start : start + block]
                todo = [f for f in span if f in wanted]
                if not todo:
                    continue
                alphas = np.zeros((len(span), height, width), dtype=np.uint8)
                fgrs = (
                    np.zeros((len(span), height, width, 3), dtype=np.uint8) if fgr_array is not None else None
                )
                images, slots = [], []
                for frame in todo:
                    if matter is None:  # the shipped mask is the alpha; the crop stage checks the image
                        try:
                            alphas[column[frame] - start] = shipped_alpha(reader.mask(camera, frame))
                        except MissingImageError:
                            log.warning(
                                "subject %s, camera %s, frame %d: no mask shipped, skipped",
                                subject,
                                camera,
                                frame,
                            )
                            counts["missing_mask"] += 1
                            continue
                        valid[c, column[frame]] = True
                        continue
                    image = reader.image(camera, frame)
                    if is_blank(image):
                        if cfg["bad_image"] == "error":
                            raise blank_image_error(subject, camera, frame)
                        log.warning(
                            "subject %s, camera %s, frame %d: blank image skipped", subject, camera, frame
                        )
                        counts["blank"] += 1
                        continue
                    images.append(image)
                    slots.append(frame)
                if images:
                    batches = [np.stack(images)] if matter.batched else [image[None] for image in images]
                    alpha_parts, fgr_parts = zip(*(matter(batch, plate) for batch in batches), strict=True)
                    alpha = np.concatenate(alpha_parts) if len(alpha_parts) > 1 else alpha_parts[0]
                    fgr = None if fgr_parts[0] is None else np.concatenate(fgr_parts)
                    for i, frame in enumerate(slots):
                        alphas[column[frame] - start] = (
                            alpha[i] if alpha.dtype == np.uint8 else alpha_to_uint8(alpha[i])
                        )
                        if fgrs is not None:
                            fgrs[column[frame] - start] = alpha_to_uint8(fgr[i])
                        valid[c, column[frame]] = True
                for frame in todo:
                    if truth is not None and valid[c, column[frame]]:
                        ious.append(_iou(alphas[column[frame] - start] > 127, truth(camera, frame) > 127))
                alpha_array[c, start : start + len(span)] = alphas
                if fgr_array is not None:
                    fgr_array[c, start : start + len(span)] = fgrs
                counts["matted"] += int(valid[c, start : start + len(span)].sum())
                bar.update(len(todo))
        bar.close()
        store.write_array("valid", valid)
        store.write_array("camera_ids", np.asarray(camera_ids))
        store.write_array("frames", np.asarray(all_frames, dtype=np.int64))
        summary = {
            "backend": description,
            "composite": cfg["composite"],
            **counts,
            "iou_mean": float(np.mean(ious)) if ious else None,
            "iou_min": float(np.min(ious)) if ious else None,
        }
        store.set_attrs(summary=summary, random_weights=random_weights)
    log.info(
        "subject %s: %d images matted over %d cameras, %s, %d without a shipped mask%s",
        subject,
        counts["matted"],
        len(camera_ids),
        "blank images left to the crop stage"
        if counts["blank"] is None
        else f"{counts['blank']} blank skipped",
        counts["missing_mask"],
        f"; IoU vs ground truth mean {summary['iou_mean']:.4f}, min {summary['iou_min']:.4f}" if ious else "",
    )
    return summary


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0

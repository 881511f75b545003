"""`avat3r create`: an avatar from uncalibrated phone photos.

Steps (each documented where it lives):

1. photos: decoded with their EXIF orientation applied (:mod:`avat3r_core.create.photos`); more photos than
   the model's input views, or an unreadable one, is an error naming the files;
2. matting without a clean plate and the head in 2D (:mod:`avat3r_core.create.matting`): a photo with no
   detectable head is an error naming it;
3. DUSt3R input windows: a 3:4 portrait window *centred on the photo centre* (phones put the principal point
   there and DUSt3R is trained on crops centred on it), just large enough to hold the head with a margin
   (black padding where it leaves the photo), resized to DUSt3R's resolution (512 x 384 by default);
4. DUSt3R on every ordered pair (one photo: the photo paired with itself, as upstream does), then global
   alignment with *unknown* cameras (:mod:`avat3r_core.models.dust3r.free_alignment`): poses and focal
   lengths recovered, principal points at the photo centres;
5. the head-centric frame (:mod:`avat3r_core.create.frame`): head centre, axes, metric scale;
6. the model's input views: square crops centred on the projected head centre at the model's input size with
   their K and head-centric w2c, composited on black with the matte; Plücker rays; position maps (the aligned
   DUSt3R points in the head frame, resampled into the crop) with confidence ``1 - 1/c`` of DUSt3R's
   confidence, zero off the matte (no Gaussians on the background, like the mesh backend); Sapiens features;
7. the avatar folder: ``avatar.pt`` (the input views in the loader's layout, what ``avat3r animate --avatar``
   reads), ``avatar.json`` (cameras, focal lengths, frame, scale, networks, RANDOM WEIGHTS labels),
   ``inputs.png`` (crops, mattes) and ``preview.png`` (the model's render of every input view, neutral code).

Without checkpoints, tiny randomly initialised DUSt3R and Sapiens networks are used and labelled RANDOM
WEIGHTS in the log, the summary and avatar.json: the result then only tests the plumbing.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from avat3r_core.create.frame import CROP_EXTENT_M, HEAD_BREADTH_M, HeadFrame, head_frame
from avat3r_core.create.matting import HeadDetection, detect_head
from avat3r_core.create.photos import CreateError, Photo, load_photo
from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.crops import CropWindow, cut_crop
from avat3r_core.geometry.rays import plucker_rays
from avat3r_core.matting.composite import composite_on_black
from avat3r_core.models.dust3r.alignment import AlignmentDivergedError
from avat3r_core.models.dust3r.free_alignment import FreeAlignmentResult, align_free_cameras
from avat3r_core.store.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "AVATAR_FORMAT",
    "CreateError",
    "CreateOptions",
    "create_avatar",
    "dust3r_window",
    "load_created_avatar",
]

AVATAR_FORMAT = "avat3r-avatar/1"
AVATAR_FILE = "avatar.pt"
INPUT_KEYS = (
    "input_rgb",
    "input_alpha",
    "plucker",
    "position",
    "confidence",
    "features",
    "input_K",
    "input_w2c",
)
HEAD_BOX = (0.8, 0.15, 0.3)
"""DUSt3R window content: the head's breadth x 0.8 either side of its centre, from 0.15 breadths above its
top to 0.3 breadths below its chin."""
WINDOW_MARGIN = 1.1


@dataclass(frozen=True)
class CreateOptions:
    """Settings of `avat3r create` (CLI flags)."""

    dust3r: str | None = None  # checkpoint; None: tiny random network (RANDOM WEIGHTS)
    sapiens: str | None = None  # checkpoint; None: tiny random network (RANDOM WEIGHTS)
    sapiens_model: str = "sapiens_2b"
    dust3r_resolution: int = 512  # DUSt3R input height; width = 3/4 of it, rounded to 16
    iterations: int = 300
    lr: float = 0.01
    batch_size: int = 8
    seed: int = 0
    device: str | None = None


@dataclass(frozen=True)
class DustWindow:
    """A photo's DUSt3R window: ``(x0, y0, width, height)`` in photo pixels, resized to (W_d, H_d)."""

    x0: int
    y0: int
    width: int
    height: int
    out_width: int
    out_height: int

    def to_window(self, u: float, v: float) -> tuple[float, float]:
        return (u - self.x0) * self.out_width / self.width, (v - self.y0) * self.out_height / self.height

    def cut(self, image: np.ndarray, resample: Image.Resampling) -> np.ndarray:
        box = (self.x0, self.y0, self.x0 + self.width, self.y0 + self.height)
        return np.asarray(
            Image.fromarray(image).crop(box).resize((self.out_width, self.out_height), resample)
        )


def dust3r_window(photo: Photo, head: HeadDetection, resolution: int) -> DustWindow:
    """The 3:4 portrait window centred on the photo centre that holds the head box (module docstring)."""
    out_h = int(resolution)
    out_w = max(16, round(0.75 * resolution / 16) * 16)
    cx, cy = photo.width / 2.0, photo.height / 2.0
    side, above, below = HEAD_BOX
    u_lo, u_hi = head.centre[0] - side * head.width, head.centre[0] + side * head.width
    v_lo, v_hi = head.top - above * head.width, head.top + head.height + below * head.width
    half_w = WINDOW_MARGIN * max(abs(u_lo - cx), abs(u_hi - cx))
    half_h = WINDOW_MARGIN * max(abs(v_lo - cy), abs(v_hi - cy))
    height = max(2.0 * half_h, 2.0 * half_w * out_h / out_w, 8.0)
    win_h = math.ceil(height)
    win_w = max(1, round(win_h * out_w / out_h))
    x0, y0 = math.floor(cx - win_w / 2.0 + 0.5), math.floor(cy - win_h / 2.0 + 0.5)
    return DustWindow(x0, y0, win_w, win_h, out_w, out_h)


# ------------------------------------------------------------------------------------------------ networks
def _device(options: CreateOptions) -> str:
    return options.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _load_dust3r(options: CreateOptions, folder: Path) -> tuple[torch.nn.Module, str]:
    from avat3r_core.models.dust3r.checkpoint import load_dust3r, write_random_dust3r

    path = options.dust3r or write_random_dust3r(folder / "tiny_random_dust3r.pth", seed=options.seed)
    model = load_dust3r(path, device=_device(options))
    random = bool(getattr(model, "random_weights", False))
    text = f"DUSt3R {'tiny random network' if options.dust3r is None else options.dust3r}"
    return model, text + (" -- RANDOM WEIGHTS" if random else "")


def _load_sapiens(options: CreateOptions, feature_dim: int, input_size: int, folder: Path) -> Any:
    from avat3r_core.models.sapiens import load_sapiens, write_random_sapiens

    device = _device(options)
    if options.sapiens:
        return load_sapiens(options.sapiens, options.sapiens_model, device=device, input_size=input_size)
    heads = next(h for h in (4, 2, 1) if feature_dim % h == 0)
    sizes = {"embed_dim": feature_dim, "depth": 2, "num_heads": heads}
    path = write_random_sapiens(folder / "tiny_random_sapiens.pth", sizes, seed=options.seed)
    return load_sapiens(path, sizes, device=device, input_size=input_size)


# ------------------------------------------------------------------------------------------------ steps
def _check_count(paths: Sequence[Path], n_views: int, max_views: int, model_path: Path) -> None:
    if not paths:
        raise CreateError("no photos given (--images a.jpg [b.jpg ...])")
    if len(paths) > n_views:
        raise CreateError(
            f"{len(paths)} photos given ({', '.join(str(p) for p in paths)}) but the model {model_path} "
            "takes "
            f"{n_views} input view{'s' if n_views > 1 else ''}; give at most {n_views} photos "
            f"(leave out {', '.join(str(p) for p in paths[n_views:])})"
        )
    if len(paths) > max_views:  # pragma: no cover - n_views <= max_views for a trained model
        raise CreateError(f"{len(paths)} photos exceed the model's max_views {max_views}")


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(0, 0)] if n == 1 else list(itertools.permutations(range(n), 2))


def _sample_into(maps: torch.Tensor, window: DustWindow, crop: CropWindow, size: int) -> torch.Tensor:
    """Resample (C, H_d, W_d) maps of a DUSt3R window into the crop's (C, S, S) pixels (bilinear; 0 off)."""
    j = (torch.arange(size, dtype=torch.float64) + 0.5) * crop.size / size
    u = crop.x0 + j
    v = crop.y0 + j
    ud = (u - window.x0) * window.out_width / window.width
    vd = (v - window.y0) * window.out_height / window.height
    gx = 2.0 * ud / window.out_width - 1.0
    gy = 2.0 * vd / window.out_height - 1.0
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].float()
    return F.grid_sample(
        maps[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0]


def _photo_camera(result_cam: Camera, w2c_head: np.ndarray, window: DustWindow, photo: Photo) -> Camera:
    """The photo's head-centric camera from the DUSt3R-window camera (undo the resize, then the cut)."""
    cam = Camera(K=result_cam.K, w2c=w2c_head, width=result_cam.width, height=result_cam.height)
    return cam.resize(window.width, window.height).crop(-window.x0, -window.y0, photo.width, photo.height)


def _crop_window(camera: Camera, size: int, photo: Photo, head: HeadDetection, strict: bool) -> CropWindow:
    """The input crop: centred on the projected head centre, covering CROP_EXTENT_M at its depth.

    When the recovered head centre is behind the camera or projects far outside the photo, the geometry is
    unusable: an error naming the photo with a trained DUSt3R (``strict``); with RANDOM WEIGHTS (where no
    geometry is expected) the crop falls back to the 2D head, with a warning, so the plumbing still runs.
    """
    uv, depth = camera.project(np.zeros((1, 3)))
    inside = (
        depth[0] > 0
        and -photo.width <= uv[0, 0] <= 2 * photo.width
        and -photo.height <= uv[0, 1] <= 2 * photo.height
    )
    if inside:
        side = float(camera.K[0, 0]) * CROP_EXTENT_M / float(depth[0])
        centre = (float(uv[0, 0]), float(uv[0, 1]))
    elif strict:
        raise CreateError(
            f"photo {photo.path}: the head centre recovered by DUSt3R's alignment does not lie in front of "
            "this photo's camera; the photos may not show the same person from compatible viewpoints"
        )
    else:
        log.warning(
            "photo %s: no usable geometry from the RANDOM WEIGHTS DUSt3R; cropping around the 2D head",
            photo.path,
        )
        side = head.width * CROP_EXTENT_M / HEAD_BREADTH_M
        centre = head.centre
    side_px = max(2, round(side))
    x0 = math.floor(centre[0] - side_px / 2.0 + 0.5)
    y0 = math.floor(centre[1] - side_px / 2.0 + 0.5)
    return CropWindow(x0=x0, y0=y0, size=side_px, out_size=size)


def _strip(images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(images, axis=1)


@torch.no_grad()
def create_avatar(
    photos: Sequence[str | Path],
    model_path: str | Path,
    out: str | Path,
    options: CreateOptions | None = None,
) -> dict[str, Any]:
    """Make the avatar folder ``out`` from ``photos`` for the trained model ``model_path``; a summary."""
    from avat3r_core.models.dust3r.inference import predict_pairs
    from avat3r_core.recon.animate import build_avatar
    from avat3r_core.recon.evaluate import load_trained_model
    from avat3r_core.recon.predict import scene_gaussians, to_uint8
    from avat3r_core.render import render

    options = options or CreateOptions()
    paths = [Path(p) for p in photos]
    model_path, out = Path(model_path), Path(out)
    device = torch.device(_device(options))
    model, config = load_trained_model(model_path, device)
    n_views = int(config["train"]["n_views"])
    _check_count(paths, n_views, model.config.max_views, model_path)
    if len(paths) < n_views:
        log.warning(
            "%d photo(s) for a model trained with %d input views: it accepts them, expect lower quality",
            len(paths),
            n_views,
        )
    size = int(model.config.image_size)

    # 1-2. photos, mattes, heads (all photos checked before any network runs)
    loaded = [load_photo(p) for p in paths]
    heads = [detect_head(photo.rgb, photo.path) for photo in loaded]

    with tempfile.TemporaryDirectory() as folder:
        # 3-4. DUSt3R windows, pairs, free alignment
        windows = [dust3r_window(p, h, options.dust3r_resolution) for p, h in zip(loaded, heads, strict=True)]
        images = np.stack(
            [w.cut(p.rgb, Image.Resampling.LANCZOS) for w, p in zip(windows, loaded, strict=True)]
        )
        alphas = np.stack(
            [
                w.cut((h.alpha * 255).astype(np.uint8), Image.Resampling.BILINEAR).astype(np.float32) / 255.0
                for w, h in zip(windows, heads, strict=True)
            ]
        )
        principal = np.array(
            [w.to_window(p.width / 2.0, p.height / 2.0) for w, p in zip(windows, loaded, strict=True)]
        )
        dust3r, dust3r_text = _load_dust3r(options, Path(folder))
        dust3r_random = bool(getattr(dust3r, "random_weights", False))
        log.info("create: %s", dust3r_text)
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pairs = _pairs(len(loaded))
        predictions = predict_pairs(dust3r, batch.to(device), pairs, batch_size=options.batch_size)
        del dust3r
        try:
            result = align_free_cameras(
                predictions,
                pairs,
                len(loaded),
                iterations=options.iterations,
                lr=options.lr,
                principal=principal,
                device=str(device),
            )
        except AlignmentDivergedError as exc:
            raise CreateError(
                f"DUSt3R alignment of {', '.join(str(p) for p in paths)} diverged: {exc}"
            ) from None

        # 5. head frame
        centres = np.array([w.to_window(*h.centre) for w, h in zip(windows, heads, strict=True)])
        breadths = np.array([h.width * w.out_width / w.width for w, h in zip(windows, heads, strict=True)])
        frame = head_frame(result, centres, breadths, alphas)

        # 6. crops, cameras, rays, positions, features
        views = _input_views(loaded, heads, windows, result, frame, size, strict=not dust3r_random)
        sapiens = _load_sapiens(options, int(model.config.feature_dim), 2 * size, Path(folder))
        log.info("create: features from %s", sapiens.description)
        features = sapiens(views["crops"])
        if model.config.use_features and features.shape[1] != model.config.feature_dim:
            raise CreateError(
                f"Sapiens {options.sapiens or '(tiny)'} gives {features.shape[1]} feature channels, the "
                f"model {model_path} expects {model.config.feature_dim}; use the Sapiens it was trained with"
            )
    inputs = {
        "input_rgb": torch.from_numpy(views["crops"]).permute(0, 3, 1, 2).float() / 255.0,
        "input_alpha": torch.from_numpy(views["alpha"])[:, None].float(),
        "plucker": torch.from_numpy(views["plucker"]).float(),
        "position": torch.from_numpy(views["position"]).float(),
        "confidence": torch.from_numpy(views["confidence"])[:, None].float(),
        "features": features.float().cpu(),
        "input_K": torch.from_numpy(views["K"]).float(),
        "input_w2c": torch.from_numpy(views["w2c"]).float(),
    }

    # 7. check the model takes it, preview, write
    avatar = build_avatar(model, inputs)
    neutral = torch.zeros(len(loaded), model.config.expression_dim, device=device)
    maps = model.decode(avatar.cache, neutral[:1])
    background = config["train"].get("background")
    bg = None if background is None else torch.as_tensor(background, dtype=torch.float32, device=device)
    renders = []
    for k in range(len(loaded)):
        image = render(
            scene_gaussians(maps, 0),
            inputs["input_K"][k : k + 1].to(device),
            inputs["input_w2c"][k : k + 1].to(device),
            width=size,
            height=size,
            background=bg,
            backend=config["train"].get("renderer", "auto"),
        ).rgb
        renders.append(to_uint8(image)[0])
    random_networks = [
        name for name, random in (("DUSt3R", dust3r_random), ("Sapiens", sapiens.random_weights)) if random
    ]
    summary = {
        "format": AVATAR_FORMAT,
        "model": str(model_path),
        "photos": [str(p) for p in paths],
        "exif_orientation": [p.orientation for p in loaded],
        "photo_sizes": [[p.width, p.height] for p in loaded],
        "input_size": size,
        "views": len(loaded),
        "dust3r": dust3r_text,
        "sapiens": sapiens.description,
        "random_weights": random_networks,
        "alignment": {
            "pairs": len(pairs),
            "iterations": result.iterations,
            "loss": result.loss,
            "dust3r_size": [windows[0].out_width, windows[0].out_height],
        },
        "focal_px": [float(k[0, 0]) for k in views["photo_K"]],
        "focal_35mm": [
            float(36.0 * k[0, 0] / max(p.width, p.height))
            for k, p in zip(views["photo_K"], loaded, strict=True)
        ],
        "head_frame": {
            "scale_m_per_unit": frame.scale,
            "head_breadth_m": HEAD_BREADTH_M,
            "per_view_centre_spread_m": float(
                np.linalg.norm(frame.per_view_centres - frame.centre, axis=1).max() * frame.scale
            ),
        },
        "cameras": [
            {"photo": str(p), "K_photo": k.tolist(), "w2c_head": m.tolist(), "crop": list(c)}
            for p, k, m, c in zip(paths, views["photo_K"], views["w2c"], views["windows"], strict=True)
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / AVATAR_FILE) as temporary:
        torch.save({"format": AVATAR_FORMAT, "inputs": inputs, "summary": json.dumps(summary)}, temporary)
    with atomic_path(out / "avatar.json") as temporary:
        Path(temporary).write_text(json.dumps(summary, indent=2) + "\n")
    alpha_rgb = [np.repeat((a * 255).round().astype(np.uint8)[..., None], 3, -1) for a in views["alpha"]]
    with atomic_path(out / "inputs.png") as temporary:
        Image.fromarray(np.concatenate([_strip(list(views["crops"])), _strip(alpha_rgb)])).save(
            temporary, format="PNG"
        )
    with atomic_path(out / "preview.png") as temporary:
        Image.fromarray(np.concatenate([_strip(list(views["crops"])), _strip(renders)])).save(
            temporary, format="PNG"
        )
    if random_networks:
        log.warning(
            "create: %s RANDOM WEIGHTS: a plumbing test, not an avatar", " and ".join(random_networks)
        )
    summary["out"] = str(out)
    return summary


def _input_views(
    photos: list[Photo],
    heads: list[HeadDetection],
    windows: list[DustWindow],
    result: FreeAlignmentResult,
    frame: HeadFrame,
    size: int,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Crops, mattes, cameras, Plücker rays and position maps of the model's input views."""
    cams = result.cameras()
    points_head = frame.to_head(result.points.reshape(-1, 3)).reshape(result.points.shape)
    out: dict[str, list[Any]] = {
        k: [] for k in ("crops", "alpha", "plucker", "position", "confidence", "K", "w2c")
    }
    out["photo_K"], out["windows"] = [], []
    for i, (photo, head, window) in enumerate(zip(photos, heads, windows, strict=True)):
        camera = _photo_camera(cams[i], frame.w2c_head(result.c2w[i]), window, photo)
        crop = _crop_window(camera, size, photo, head, strict)
        crop_camera = crop.camera(camera)
        alpha = cut_crop(head.alpha, crop)
        rgb = cut_crop(composite_on_black(photo.rgb, head.alpha), crop)
        maps = torch.from_numpy(np.concatenate([points_head[i], result.confidence[i][..., None]], -1))
        sampled = _sample_into(maps.permute(2, 0, 1), window, crop, size)
        conf = sampled[3].clamp_min(1.0).numpy()
        out["crops"].append(rgb)
        out["alpha"].append(alpha.astype(np.float32))
        out["plucker"].append(plucker_rays(crop_camera).transpose(2, 0, 1))
        out["position"].append(sampled[:3].numpy())
        out["confidence"].append(((1.0 - 1.0 / conf) * (alpha >= 0.5)).astype(np.float32))
        out["K"].append(crop_camera.K)
        out["w2c"].append(crop_camera.w2c)
        out["photo_K"].append(camera.K)
        out["windows"].append((crop.x0, crop.y0, crop.size))
    return {k: (np.stack(v) if k not in ("windows",) else v) for k, v in out.items()}


def load_created_avatar(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input views as a loader sample without batch dimension, summary) of an ``avat3r create`` folder."""
    folder = Path(folder)
    path = folder / AVATAR_FILE if folder.is_dir() else folder
    if not path.is_file():
        raise CreateError(f"{folder} is not an avatar folder made by avat3r create (no {AVATAR_FILE})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file
        raise CreateError(f"avatar file {path} is unreadable: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != AVATAR_FORMAT:
        raise CreateError(f"{path} is not an avatar file ({AVATAR_FORMAT})")
    inputs = dict(state["inputs"])
    missing = [k for k in INPUT_KEYS if k not in inputs]
    if missing:
        raise CreateError(f"avatar file {path} lacks {missing}")
    summary = json.loads(state["summary"])
    inputs["subject"] = folder.name if folder.is_dir() else folder.stem
    return inputs, summary

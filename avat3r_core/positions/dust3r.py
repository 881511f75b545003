"""The `dust3r` positions backend: DUSt3R on 4 views with known cameras, fused by global alignment.

Window choice. The released 512 model was trained on images of 512x384 down to 512x160; a square 512x512
crop lies outside that range, and the official loader centre-crops squares to 512x384. We do the same
explicitly ("portrait", the default): DUSt3R sees the centre 3:4 portrait window of the square crop (the head
is centred, so the side strips are mostly background), the window's intrinsics are shifted by the strip
width (`Camera.crop`), and the aligned map is placed back into the square with confidence 0 on the strips.
"square" feeds the whole crop (outside the training range; for models trained on squares). Inputs are RGB in
[-1, 1]; all 12 ordered pairs are predicted in batches; bf16 autocast on CUDA, fp32 on CPU.

The same function (`positions_for_views`) serves any 4 views with known cameras: evaluation and driving need
the maps of the actual 4 inputs, not of the training-time partner sets.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avat3r_core.errors import CaptureError, ConfigError
from avat3r_core.geometry.cameras import Camera
from avat3r_core.models.dust3r.alignment import AlignmentDivergedError, align_known_cameras
from avat3r_core.models.dust3r.checkpoint import load_dust3r
from avat3r_core.models.dust3r.inference import predict_pairs


def dust3r_window(size: int, cfg: dict[str, Any]) -> tuple[int, int, int, int]:
    """(x0, window width, DUSt3R height, DUSt3R width) for a square crop of `size` pixels."""
    resolution = cfg["resolution"]
    if cfg["window"] == "square":
        return 0, size, resolution, resolution
    width = round(size * 0.75)
    return (size - width) // 2, width, resolution, round(resolution * 0.75 / 16) * 16


def _resize(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear with half-pixel centres (align_corners=False), the mapping Camera.resize assumes."""
    if tensor.shape[-2:] == (height, width):
        return tensor
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def positions_for_views(
    model: torch.nn.Module,
    images: list[np.ndarray],
    cameras: list[Camera],
    cfg: dict[str, Any],
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Position maps (N, S, S, 3) in the cameras' world frame and confidences (N, S, S) in [0, 1].

    `images` are square uint8 crops (S, S, 3) and `cameras` their cameras (world = head-centric frame).
    Stored confidence is 1 - 1/c of DUSt3R's aligned confidence c >= 1; 0 where DUSt3R saw nothing.
    """
    size = images[0].shape[0]
    x0, width, height_d, width_d = dust3r_window(size, cfg)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    batch = _resize(batch[..., :, x0 : x0 + width], height_d, width_d).to(device)
    view_cameras = [camera.crop(x0, 0, width, size).resize(width_d, height_d) for camera in cameras]
    pairs = list(itertools.permutations(range(len(images)), 2))
    with torch.no_grad():
        predictions = predict_pairs(model, batch, pairs, batch_size=cfg["batch_size"])
    result = align_known_cameras(
        predictions, pairs, view_cameras, iterations=cfg["iterations"], lr=cfg["lr"], device=device
    )
    points = torch.from_numpy(np.ascontiguousarray(result.points)).permute(0, 3, 1, 2)
    conf = torch.from_numpy(np.ascontiguousarray(result.confidence))[:, None]
    points = _resize(points, size, width).permute(0, 2, 3, 1).numpy()
    conf = _resize(conf, size, width)[:, 0].numpy()
    full_points = np.zeros((len(images), size, size, 3), dtype=np.float32)
    full_conf = np.zeros((len(images), size, size), dtype=np.float32)
    full_points[:, :, x0 : x0 + width] = points
    full_conf[:, :, x0 : x0 + width] = 1.0 - 1.0 / np.maximum(conf, 1.0)
    return full_points, full_conf


class Dust3rPositions:
    """The stage's DUSt3R backend: the input crop and its partners at one timestep -> the input's map."""

    def __init__(self, cfg: dict[str, Any], subject: str) -> None:
        if not cfg.get("checkpoint"):
            raise ConfigError("positions.dust3r.checkpoint", "the dust3r backend needs a checkpoint path")
        self.cfg = cfg
        self.subject = subject
        self.device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_dust3r(cfg["checkpoint"], device=self.device)
        random = " RANDOM WEIGHTS" if getattr(self.model, "random_weights", False) else ""
        self.description = (
            f"DUSt3R {cfg['checkpoint']} on {self.device}, {cfg['window']} window at {cfg['resolution']} px, "
            f"{cfg['iterations']} alignment iterations{random}"
        )

    def __call__(self, crops, camera: str, partners: list[str], frame: int) -> tuple[np.ndarray, np.ndarray]:
        if len(partners) < 3:
            raise CaptureError(
                f"input view has {len(partners)} partner views, needs 3",
                subject=self.subject,
                camera=camera,
                frame=frame,
            )
        views = [camera, *partners]
        images = [crops.image(view, frame) for view in views]
        cameras = [crops.camera(view, frame) for view in views]
        try:
            points, conf = positions_for_views(self.model, images, cameras, self.cfg, self.device)
        except AlignmentDivergedError as exc:
            raise CaptureError(
                f"DUSt3R alignment diverged: {exc}", subject=self.subject, camera=camera, frame=frame
            ) from None
        return points[0], conf[0]

"""From a batch of samples to rendered supervision views: the part training and evaluation share.

The network runs under the caller's autocast (bf16 on GPU); splatting always runs in float32 with
autocast off, since bf16 alpha compositing visibly bands and gsplat expects float32 anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avat3r_core.render import Gaussians, render


@dataclass
class SampleRender:
    """Rendered supervision views of one sample and the ground truth they are compared with."""

    pred: torch.Tensor  # (N, 3, H, W) in [0, 1]
    pred_alpha: torch.Tensor  # (N, 1, H, W)
    target: torch.Tensor  # (N, 3, H, W)
    target_alpha: torch.Tensor  # (N, 1, H, W)
    n_gaussians: int


def scene_gaussians(maps: Any, b: int) -> Gaussians:
    """The kept per-pixel Gaussians of sample ``b`` as one float32 scene for the renderer."""
    scene = maps.scene(b)
    return Gaussians(
        means=scene.means.float(),
        quats=scene.quats.float(),
        scales=scene.scales.float(),
        opacities=scene.opacities.float().reshape(-1),
        colors=scene.colors.float(),
    )


def render_supervision(
    maps: Any,
    batch: Mapping[str, torch.Tensor],
    b: int,
    *,
    background: torch.Tensor | None = None,
    backend: str = "auto",
) -> SampleRender:
    """Render sample ``b``'s Gaussians into its valid supervision cameras."""
    valid = batch["target_valid"][b]
    target = batch["target_rgb"][b][valid]
    height, width = target.shape[-2:]
    with torch.autocast(device_type=target.device.type, enabled=False):
        gaussians = scene_gaussians(maps, b)
        out = render(
            gaussians,
            batch["target_K"][b][valid].float(),
            batch["target_w2c"][b][valid].float(),
            width=int(width),
            height=int(height),
            background=background,
            backend=backend,
        )
    return SampleRender(
        pred=out.rgb,
        pred_alpha=out.alpha,
        target=target,
        target_alpha=batch["target_alpha"][b][valid],
        n_gaussians=int(gaussians.means.shape[0]),
    )


def image_grid(rows: list[torch.Tensor], max_views: int = 4) -> torch.Tensor:
    """Rows of (N, 3, H, W) images in [0, 1] -> one (3, rows*H, k*W) CPU picture of the first k views."""
    k = min(max_views, rows[0].shape[0])
    lines = [torch.cat(list(row[:k].detach().float().clamp(0, 1).cpu()), dim=-1) for row in rows]
    return torch.cat(lines, dim=-2)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (n, 3, H, W) in [0, 1] -> uint8 (n, H, W, 3), rounded."""
    array = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return (array * 255.0 + 0.5).astype(np.uint8)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a collated batch to ``device`` (strings such as subject ids stay)."""
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }

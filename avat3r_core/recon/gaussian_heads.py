"""Per-pixel Gaussian attribute heads of Avat3r, their activations, and the dense output maps.

One Gaussian per input pixel (Avat3r poster): every attribute is a bias-carrying 1x1 linear head on the
upsampler's per-view grid whose ``r²·k`` outputs are pixel-shuffled (``r = patch / 2^steps``) to the full
input resolution, view by view.

The paper does not state its activations, so these are GRM's (docs: reference/model.md §2), with the
world-unit constants exposed because the pipeline's head-centric frame is in metres, not GRM's unit cube:

* position: skip on: ``input position map + position_offset_scale · offset`` (Avat3r's position skip);
  otherwise ``camera centre + depth · unit ray`` with ``depth = near + (far - near) · sigmoid(x)``
  (GS-LRM/GRM-style bounded depth), so a Gaussian always lies on its pixel's ray.
* colour: skip on, ``colour_activation="clamp"``: ``clamp(rgb + offset, 0, 1)``, the paper's additive
  skip taken literally; ``"sigmoid"``: ``sigmoid(logit(rgb) + offset)``, the same skip in logit space
  (never saturates the gradient, reproduces ``rgb`` up to the 1e-4 clamp of the logit). Skip off:
  ``sigmoid(x)`` (GRM). Colours are RGB, i.e. spherical-harmonics degree 0.
* opacity: ``sigmoid(x - opacity_shift)`` with shift 2 (GRM: new Gaussians start mostly transparent).
* scale: ``scale_min + (scale_max - scale_min) · sigmoid(x)`` (GRM's bounded scale); the bias starts
  at ``scale_init`` instead of GRM's midpoint, which in metres would be a 1.5 cm blob per pixel.
* rotation: ``normalize(x)``, quaternion order wxyz (as gsplat); the bias starts at the identity.

The offset heads (position, colour with a skip) start at exactly zero, so the untrained network
reproduces the input position map and colours; the remaining heads start at GRM's N(0, 0.02)
(depth: N(0, 0.015), GRM's ``depth_std``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from avat3r_core.recon.layers import pixel_shuffle_views

_LOGIT_EPS = 1e-4


class SceneGaussians(NamedTuple):
    """The kept Gaussians of one sample, flat; field names match ``avat3r_core.render.gaussians``.

    means (N, 3) world units; quats (N, 4) unit wxyz; scales (N, 3) post-activation standard deviations;
    opacities (N,) in (0, 1); colors (N, 3) RGB in [0, 1].
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor


@dataclass
class GaussianMaps:
    """Dense per-pixel Gaussians: one per input pixel of every view, all post-activation.

    Shapes: means (B, V, S, S, 3), quats (B, V, S, S, 4) wxyz, scales (B, V, S, S, 3),
    opacities (B, V, S, S), colors (B, V, S, S, 3), keep (B, V, S, S) bool (the confidence filter).
    Dense maps keep the batch rectangular for losses and regularisers; :meth:`scene` applies ``keep``.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    keep: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.means.shape[0])

    def scene(self, b: int) -> SceneGaussians:
        """The kept Gaussians of sample ``b``, flattened over views and pixels (view-major, row-major)."""
        keep = self.keep[b]
        return SceneGaussians(
            means=self.means[b][keep],
            quats=self.quats[b][keep],
            scales=self.scales[b][keep],
            opacities=self.opacities[b][keep],
            colors=self.colors[b][keep],
        )

    def scenes(self) -> list[SceneGaussians]:
        """:meth:`scene` of every sample (the counts differ, so a list rather than a tensor)."""
        return [self.scene(b) for b in range(self.batch_size)]


class GaussianHeads(nn.Module):
    """The five attribute heads and their activations (module docstring for the formulas).

    ``upscale`` is the pixel-shuffle factor ``r`` from the upsampler grid to the input resolution.
    ``position_mode`` is ``"offset"`` (position skip) or ``"depth"`` (a depth along each pixel's ray).
    """

    def __init__(
        self,
        width: int,
        upscale: int,
        *,
        position_mode: str,
        colour_skip: bool,
        colour_activation: str,
        position_offset_scale: float,
        scale_min: float,
        scale_max: float,
        scale_init: float,
        opacity_shift: float,
        depth_near: float,
        depth_far: float,
    ) -> None:
        super().__init__()
        if position_mode not in ("offset", "depth"):
            raise ValueError(f"position_mode must be 'offset' or 'depth', got {position_mode!r}")
        self.upscale = upscale
        self.position_mode = position_mode
        self.colour_skip = colour_skip
        self.colour_activation = colour_activation
        self.position_offset_scale = position_offset_scale
        self.scale_min, self.scale_max = scale_min, scale_max
        self.opacity_shift = opacity_shift
        self.depth_near, self.depth_far = depth_near, depth_far
        ratio = upscale * upscale
        channels = {
            "position": 3 if position_mode == "offset" else 1,
            "colour": 3,
            "opacity": 1,
            "scale": 3,
            "rotation": 4,
        }
        self.heads = nn.ModuleDict({name: nn.Linear(width, k * ratio) for name, k in channels.items()})
        self.scale_init = scale_init
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The starting point described in the module docstring (zero offsets, identity rotations, ...)."""
        ratio = self.upscale**2
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
        position = self.heads["position"]
        if self.position_mode == "offset":
            nn.init.zeros_(position.weight)  # untrained model = input position map
        else:
            nn.init.normal_(position.weight, std=0.015)  # GRM depth_std; bias 0 = mid depth
        if self.colour_skip:
            nn.init.zeros_(self.heads["colour"].weight)  # untrained model = input colours
        unit = (self.scale_init - self.scale_min) / (self.scale_max - self.scale_min)
        self.heads["scale"].bias.fill_(math.log(unit / (1.0 - unit)))
        # PixelShuffle channel c·r² + sub: the first r² outputs are the w component of every sub-pixel.
        self.heads["rotation"].bias[:ratio].fill_(1.0)

    def raw(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-activation maps ``(B·V, S, S, k)`` in float32 from the grid ``(B·V, h', w', C)``."""
        return {name: pixel_shuffle_views(head(x), self.upscale).float() for name, head in self.heads.items()}

    def forward(
        self,
        x: torch.Tensor,
        batch_size: int,
        *,
        rgb: torch.Tensor,
        keep: torch.Tensor,
        position: torch.Tensor | None = None,
        ray_origin: torch.Tensor | None = None,
        ray_dir: torch.Tensor | None = None,
    ) -> GaussianMaps:
        """Activated Gaussians. Per-pixel inputs are channels-last ``(B, V, S, S, k)``; ``ray_origin`` is
        ``(B, V, 3)``. ``position`` is needed in offset mode, ``ray_origin``/``ray_dir`` in depth mode."""
        raw = {
            name: t.reshape(batch_size, -1, *t.shape[1:]) for name, t in self.raw(x).items()
        }  # (B, V, S, S, k)
        if raw["colour"].shape[:4] != rgb.shape[:4]:
            raise ValueError(
                f"head output grid {tuple(raw['colour'].shape[:4])} does not match the input pixels "
                f"{tuple(rgb.shape[:4])}"
            )
        if self.position_mode == "offset":
            if position is None:
                raise ValueError("position skip needs the input position map")
            means = position.float() + self.position_offset_scale * raw["position"]
        else:
            if ray_origin is None or ray_dir is None:
                raise ValueError("depth positions need the camera centres and ray directions")
            depth = self.depth_near + (self.depth_far - self.depth_near) * torch.sigmoid(raw["position"])
            means = ray_origin.float()[:, :, None, None, :] + depth * ray_dir.float()
        colour = raw["colour"]
        if not self.colour_skip:
            colors = torch.sigmoid(colour)
        elif self.colour_activation == "clamp":
            colors = (rgb.float() + colour).clamp(0.0, 1.0)
        else:
            colors = torch.sigmoid(torch.logit(rgb.float(), eps=_LOGIT_EPS) + colour)
        scales = self.scale_min + (self.scale_max - self.scale_min) * torch.sigmoid(raw["scale"])
        opacities = torch.sigmoid(raw["opacity"][..., 0] - self.opacity_shift)
        quats = F.normalize(raw["rotation"], dim=-1)
        return GaussianMaps(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, keep=keep
        )

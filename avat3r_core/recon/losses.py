"""The training loss: ``l1 * L1 + ssim * (1 - SSIM) + lpips * LPIPS`` on rendered supervision views.

The weights (0.8, 0.2, 0.01) and "LPIPS only from step 3M on" come from secondary notes on the paper
(reference/model.md), not from the paper itself; the config labels them so. A weight of 0 removes the term
without loading anything (the paper's own ablation table was trained without LPIPS); a non-zero LPIPS
weight needs the AlexNet and LPIPS head weights from local files and fails at start-up, not after millions
of steps, when they are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avat3r_core.metrics.image import ssim


@dataclass(frozen=True)
class LossWeights:
    l1: float = 0.8
    ssim: float = 0.2
    lpips: float = 0.01
    lpips_from_step: int = 3_000_000

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> LossWeights:
        return cls(**{k: section[k] for k in ("l1", "ssim", "lpips", "lpips_from_step") if k in section})


class PhotometricLoss(nn.Module):
    """Weighted L1 + SSIM + LPIPS between rendered and ground-truth images in [0, 1], (N, 3, H, W)."""

    def __init__(self, weights: LossWeights, lpips: nn.Module | None = None) -> None:
        super().__init__()
        if weights.lpips > 0 and lpips is None:
            raise ValueError("a non-zero LPIPS weight needs an LPIPS network")
        self.weights = weights
        self.lpips = lpips if weights.lpips > 0 else None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> PhotometricLoss:
        """Build from the ``train.loss`` section, loading LPIPS only when its weight is non-zero."""
        weights = LossWeights.from_config(section)
        lpips = None
        if weights.lpips > 0:
            from avat3r_core.metrics.lpips import LPIPS

            alexnet = section.get("lpips_alexnet")
            heads = section.get("lpips_heads")
            lpips = LPIPS.from_files(Path(alexnet) if alexnet else None, Path(heads) if heads else None)
        return cls(weights, lpips)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Loss terms (each a scalar averaged over the images) and their weighted ``total``."""
        pred, target = pred.float(), target.float()
        terms: dict[str, torch.Tensor] = {"l1": (pred - target).abs().mean()}
        total = self.weights.l1 * terms["l1"]
        if self.weights.ssim > 0:
            terms["ssim"] = 1.0 - ssim(pred, target, reduction="mean")
            total = total + self.weights.ssim * terms["ssim"]
        if self.lpips is not None and step >= self.weights.lpips_from_step:
            terms["lpips"] = self.lpips(pred, target).mean()
            total = total + self.weights.lpips * terms["lpips"]
        terms["total"] = total
        return terms

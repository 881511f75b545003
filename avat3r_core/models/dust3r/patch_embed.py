"""Patch embeddings: a strided conv that turns an image into tokens plus their (y, x) grid positions.

``PatchEmbedDust3R`` embeds any image whose sides are multiples of the patch size in its native
orientation (what inference uses). ``ManyAR_PatchEmbed`` is the training-time variant that expects
landscape tensors and transposes the portrait ones (flagged by ``true_shape``) before embedding.
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def grid_positions(batch: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(B, h*w, 2) int64 positions (row, col) in row-major token order, as ``cartesian_prod(y, x)``."""
    y = torch.arange(h, device=device)
    x = torch.arange(w, device=device)
    pos = torch.cartesian_prod(y, x)
    return pos.view(1, h * w, 2).expand(batch, -1, -1).clone()


class PatchEmbed(nn.Module):
    """Conv2d(k=s=patch) + identity norm; keys ``proj.weight`` / ``proj.bias`` as in CroCo."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.Identity()

    def _check(self, h: int, w: int) -> None:
        ph, pw = self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {ph}x{pw}")


class PatchEmbedDust3R(PatchEmbed):
    """Native-orientation embedding; ``true_shape`` is accepted for interface parity and ignored."""

    def forward(
        self, x: torch.Tensor, true_shape: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        self._check(h, w)
        x = self.proj(x)
        pos = grid_positions(b, x.shape[2], x.shape[3], x.device)
        return self.norm(x.flatten(2).transpose(1, 2)), pos


class ManyAR_PatchEmbed(PatchEmbed):
    """Landscape tensors in; portrait images (per ``true_shape``) are stored transposed and embedded so."""

    def forward(self, img: torch.Tensor, true_shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = img.shape
        if w < h:
            raise ValueError(f"ManyAR_PatchEmbed expects landscape tensors, got {h}x{w}")
        self._check(h, w)
        if true_shape.shape != (b, 2):
            raise ValueError(f"true_shape must be ({b}, 2), got {tuple(true_shape.shape)}")
        gh, gw = h // self.patch_size[0], w // self.patch_size[1]
        height, width = true_shape.T
        landscape = width >= height
        portrait = ~landscape
        x = img.new_zeros((b, gh * gw, self.embed_dim))
        pos = torch.zeros((b, gh * gw, 2), dtype=torch.int64, device=img.device)
        if landscape.any():
            x[landscape] = self.proj(img[landscape]).permute(0, 2, 3, 1).flatten(1, 2).to(x.dtype)
            pos[landscape] = grid_positions(1, gh, gw, img.device)
        if portrait.any():
            x[portrait] = (
                self.proj(img[portrait].swapaxes(-1, -2)).permute(0, 2, 3, 1).flatten(1, 2).to(x.dtype)
            )
            pos[portrait] = grid_positions(1, gw, gh, img.device)
        return self.norm(x), pos


PATCH_EMBEDS: dict[str, type[PatchEmbed]] = {
    "PatchEmbedDust3R": PatchEmbedDust3R,
    "ManyAR_PatchEmbed": ManyAR_PatchEmbed,
}

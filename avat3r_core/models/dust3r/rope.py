"""2D rotary position embedding (RoPE2D) as used by CroCo/DUSt3R with ``pos_embed='RoPE100'``.

The head dimension is split in two halves: the first half is rotated by the token's patch row (y), the
second by its column (x). Each half uses the non-interleaved "rotate half" form. There are no parameters,
so the embedding adds no checkpoint keys; being relative, it works for any grid shape (any aspect ratio).
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RoPE2D(nn.Module):
    """Applies 2D RoPE to (B, heads, N, head_dim) tokens given (B, N, 2) integer (y, x) positions."""

    def __init__(self, freq: float = 100.0, F0: float = 1.0) -> None:
        super().__init__()
        self.base = float(freq)
        self.F0 = float(F0)

    def _rope1d(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        dim = x.shape[-1]
        inv_freq = self.F0 / (self.base ** (torch.arange(0, dim, 2, device=x.device).float() / dim))
        # Angles from integer positions in fp32 (exactly upstream's table entries), computed per call rather
        # than looked up in a table sized by positions.max(), which would force a GPU sync in every layer.
        angles = pos[:, None, :, None].float() * inv_freq  # (B, 1, N, dim/2)
        angles = torch.cat((angles, angles), dim=-1)
        return x * angles.cos().to(x.dtype) + _rotate_half(x) * angles.sin().to(x.dtype)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] % 4:
            raise ValueError(f"RoPE2D needs a head dim divisible by 4, got {tokens.shape[-1]}")
        if positions.ndim != 3 or positions.shape[-1] != 2:
            raise ValueError(f"positions must be (B, N, 2), got {tuple(positions.shape)}")
        y, x = tokens.chunk(2, dim=-1)
        return torch.cat((self._rope1d(y, positions[..., 0]), self._rope1d(x, positions[..., 1])), dim=-1)

"""Transformer blocks of CroCo/DUSt3R: ViT encoder block and the cross-attending decoder block.

Module and attribute names follow croco/models/blocks.py so that state-dict keys match the released
checkpoints (``attn.qkv``, ``cross_attn.projq``, ``mlp.fc1``, ``norm_y`` ...). Attention uses
``scaled_dot_product_attention``: the same softmax(q k^T / sqrt(d)) v maths, but fused kernels on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .rope import RoPE2D

NormFactory = Callable[[int], nn.Module]


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf form, as timm) -> fc2."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C // heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Self-attention with a fused qkv projection laid out as timm's (3, heads, head_dim)."""

    def __init__(
        self, dim: int, rope: RoPE2D | None = None, num_heads: int = 8, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, xpos: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.rope is not None:
            q = self.rope(q, xpos)
            k = self.rope(k, xpos)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Attention of queries from one view onto keys/values of the other view (separate q/k/v projections)."""

    def __init__(
        self, dim: int, rope: RoPE2D | None = None, num_heads: int = 8, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        qpos: torch.Tensor,
        kpos: torch.Tensor,
    ) -> torch.Tensor:
        q = _heads(self.projq(query), self.num_heads)
        k = _heads(self.projk(key), self.num_heads)
        v = _heads(self.projv(value), self.num_heads)
        if self.rope is not None:
            q = self.rope(q, qpos)
            k = self.rope(k, kpos)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm ViT block: x += attn(norm1 x); x += mlp(norm2 x)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_layer: NormFactory = nn.LayerNorm,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, rope=rope, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, xpos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), xpos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention, cross-attention onto the (normed) other view, MLP.

    Returns ``(x, y)`` with ``y`` unchanged, as the official block does.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_layer: NormFactory = nn.LayerNorm,
        norm_mem: bool = True,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, rope=rope, num_heads=num_heads, qkv_bias=qkv_bias)
        self.cross_attn = CrossAttention(dim, rope=rope, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.norm3 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = norm_layer(dim) if norm_mem else nn.Identity()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, xpos: torch.Tensor, ypos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.attn(self.norm1(x), xpos)
        y_ = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_, y_, xpos, ypos)
        x = x + self.mlp(self.norm3(x))
        return x, y

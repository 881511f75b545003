"""Transformer building blocks of the Avat3r network: attention, pre-LN blocks, 1-D windowed attention and
the GRM-style transformer upsampler.

Every attention goes through :func:`torch.nn.functional.scaled_dot_product_attention` without masks, so on a
GPU PyTorch picks flash / memory-efficient kernels on its own: the windowed attention below is written so
that no window ever needs a mask (see :func:`windowed_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, H*d) -> (N, H, L, d)."""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, H, L, d) -> (N, L, H*d)."""
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def windowed_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None, shifted: bool
) -> torch.Tensor:
    """Attention within 1-D windows of the sequence axis of ``q, k, v`` (each ``(N, H, L, d)``).

    Windows are consecutive runs of ``window`` tokens; ``shifted`` moves the window grid by half a window
    (Swin style), so information crosses window borders every other layer. Instead of GRM's cyclic
    ``roll`` (which puts the first and last half-windows of the sequence into one window, i.e. couples the
    top and bottom rows of a view) the shifted grid simply has a half window at each end, which is what
    Swin's attention mask achieves; no mask is needed, so fast SDPA kernels stay usable. A sequence that
    is not a multiple of the window gets a shorter last window. ``window=None`` or ``window >= L`` is
    full attention.
    """
    n, heads, length, dim = q.shape
    if window is None or window >= length:
        return F.scaled_dot_product_attention(q, k, v)
    start = window // 2 if shifted else 0
    n_full = (length - start) // window
    end = start + n_full * window
    pieces = []
    if start > 0:
        pieces.append(F.scaled_dot_product_attention(q[:, :, :start], k[:, :, :start], v[:, :, :start]))
    if n_full > 0:

        def tile(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :, start:end].reshape(n, heads, n_full, window, dim).transpose(1, 2)
            return t.reshape(n * n_full, heads, window, dim)

        out = F.scaled_dot_product_attention(tile(q), tile(k), tile(v))
        out = out.reshape(n, n_full, heads, window, dim).transpose(1, 2).reshape(n, heads, end - start, dim)
        pieces.append(out)
    if end < length:
        pieces.append(F.scaled_dot_product_attention(q[:, :, end:], k[:, :, end:], v[:, :, end:]))
    return torch.cat(pieces, dim=2)


class Mlp(nn.Module):
    """Two-layer MLP with GELU (ratio 4 in every block of the network)."""

    def __init__(self, width: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = round(width * ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``window`` restricts it to 1-D windows (see :func:`windowed_attention`)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, window: int | None = None, shifted: bool = False) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(windowed_attention(q, k, v, window, shifted)))


class CrossAttention(nn.Module):
    """Multi-head attention from ``x`` (queries) to a context sequence (keys and values)."""

    def __init__(self, width: int, heads: int, context_width: int | None = None) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width or width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q(x), self.heads)
        k, v = (_split_heads(t, self.heads) for t in self.kv(context).chunk(2, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.

    ``window``/``shifted`` make it a windowed block (the upsampler's); ``None`` is global attention (the
    cross-view encoder's, over the tokens of all views jointly).
    """

    def __init__(
        self, width: int, heads: int, mlp_ratio: float = 4.0, window: int | None = None, shifted: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio)
        self.window, self.shifted = window, shifted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.window, self.shifted)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block into the expression tokens, optionally preceded by self-attention.

    ``[x + SelfAttn(LN(x))]`` (only with ``self_attention``), ``x + CrossAttn(LN(x), LN(ctx))``,
    ``x + MLP(LN(x))``. The context gets its own LayerNorm because the expression tokens come straight from
    an MLP whose output scale is unrelated to the view tokens'.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, self_attention: bool = False) -> None:
        super().__init__()
        self.self_attn: SelfAttention | None = None
        if self_attention:
            self.norm_self = nn.LayerNorm(width)
            self.self_attn = SelfAttention(width, heads)
        self.norm_q = nn.LayerNorm(width)
        self.norm_ctx = nn.LayerNorm(width)
        self.cross = CrossAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            x = x + self.self_attn(self.norm_self(x))
        x = x + self.cross(self.norm_q(x), self.norm_ctx(context))
        return x + self.mlp(self.norm2(x))


def run_block(block: nn.Module, *args: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
    """Call ``block(*args)``, through non-reentrant activation checkpointing when asked (training only)."""
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def pixel_shuffle_views(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel-shuffle a per-view token grid: ``(N, h, w, C·f²)`` -> ``(N, h·f, w·f, C)``.

    ``N`` is ``B·V``: every view is shuffled on its own, so the ``f×f`` block of output pixels of token
    ``(i, j)`` is ``(i·f..i·f+f-1, j·f..j·f+f-1)`` *of the same view*. (GRM reshapes the whole multi-view
    sequence into one square grid before shuffling, which scrambles the row order; not copied.) Channel
    ``c·f² + a·f + b`` lands at sub-pixel ``(a, b)`` of channel ``c``, PyTorch's PixelShuffle convention.
    """
    out = F.pixel_shuffle(x.permute(0, 3, 1, 2), factor)
    return out.permute(0, 2, 3, 1)


class UpsampleStep(nn.Module):
    """One GRM upsampling step: ``Linear(C_in -> C_out·4)``, per-view PixelShuffle(2), windowed transformer.

    The windows run over each view's own flattened (row-major) token sequence, odd layers shifted by half
    a window, so the attention cost stays linear in the number of tokens at the 2x resolution.
    """

    def __init__(
        self,
        in_width: int,
        out_width: int,
        layers: int,
        head_dim: int,
        window: int | None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if out_width % head_dim:
            raise ValueError(f"upsampler width {out_width} is not divisible by head_dim {head_dim}")
        self.out_width = out_width
        self.proj = nn.Linear(in_width, out_width * 4)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(out_width, out_width // head_dim, mlp_ratio, window=window, shifted=i % 2 == 1)
            for i in range(layers)
        )

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """The linear projection and the per-view pixel shuffle: ``(N, h, w, C_in) -> (N, 2h, 2w, C_out)``."""
        return pixel_shuffle_views(self.proj(x), 2)

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        x = self.shuffle(x)
        n, h, w, c = x.shape
        seq = x.reshape(n, h * w, c)
        for block in self.blocks:
            seq = run_block(block, seq, use_checkpoint=use_checkpoint)
        return seq.reshape(n, h, w, c)


class Upsampler(nn.Module):
    """GRM's transformer upsampler: ``steps`` x (2x per-view upsampling), channel decay, final LayerNorm.

    Width after each step is ``max(width // channel_decay, min_width)`` (GRM: decay 2, floor 64); with
    ``steps=0`` it is only the final LayerNorm. Input and output are per-view grids ``(B·V, h, w, C)``.
    """

    def __init__(
        self,
        width: int,
        steps: int,
        layers: int,
        head_dim: int,
        window: int | None,
        channel_decay: int = 2,
        min_width: int = 64,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.steps = nn.ModuleList()
        for _ in range(steps):
            out = max(width // channel_decay, min_width)
            self.steps.append(UpsampleStep(width, out, layers, head_dim, window, mlp_ratio))
            width = out
        self.out_width = width
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
        for step in self.steps:
            x = step(x, use_checkpoint=use_checkpoint)
        return self.norm(x)

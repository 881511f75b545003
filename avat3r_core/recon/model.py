"""The Avat3r reconstruction network: input views + expression code -> one 3D Gaussian per input pixel.

Architecture (Avat3r, ICCV 2025; reference/model.md §1, GRM conventions §2):

1. **Tokens.** Every input view's ``[RGB in [-1, 1], Plücker (moment, direction), position map]`` is cut
   into ``patch x patch`` patches and linearly embedded (a stride-``patch`` conv, bias-free as GRM). The
   Sapiens features, resampled bilinearly to the token grid if needed, pass a LayerNorm and a linear
   projection and are *added*: concatenating them to the patch vector and applying one linear layer is
   the same function (a linear map of a concatenation is the sum of two linear maps), and the sum avoids a
   ``D + C_feat`` wide intermediate. A learned token-position encoding (resampled bilinearly when the grid
   differs from ``image_size / patch``) and a learned per-view encoding are added, then LayerNorm.
2. **Encoder.** ``self_layers`` pre-LN self-attention blocks over the tokens of all views jointly (cross-view
   matching). Everything up to here is independent of the expression and is what :meth:`Avat3rModel.encode`
   caches (the paper's driving mode reuses it for every frame).
3. **Expression.** ``z_exp`` -> 2-layer ReLU MLP (``expression_hidden``) -> ``expression_tokens`` tokens of
   width D. ``cross_layers`` pre-LN blocks: cross-attention from the view tokens into the expression tokens,
   then an MLP. The sources describe them as "8 cross-attention layers" after "8 self-attention layers",
   so by default the cross blocks have no self-attention of their own (``cross_self_attention=True`` adds
   one per block); the upsampler's windowed attention still mixes neighbouring tokens after them.
4. **Upsampler** (GRM): per view, ``Linear(D -> D'·4)`` + PixelShuffle(2) + a 2-layer 1-D windowed
   transformer, ``upsample_steps`` times, final LayerNorm (:mod:`avat3r_core.recon.layers`).
5. **Heads** (:mod:`avat3r_core.recon.gaussian_heads`): 1x1 linear heads pixel-shuffled to the input
   resolution, GRM activations, position and colour skips, the confidence filter as a ``keep`` mask.

World units are the pipeline's: **metres**, head-centric (DESIGN.md "Conventions"; the Ava-256 reader and the
synthetic capture convert their millimetres at the reader). The defaults of ``scale_*``, ``depth_*``,
``position_offset_scale`` and ``position_input_scale`` are chosen for a ~0.25 m head seen from ~1 m.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avat3r_core.recon.gaussian_heads import GaussianHeads, GaussianMaps, SceneGaussians
from avat3r_core.recon.layers import CrossAttentionBlock, SelfAttentionBlock, Upsampler, run_block

__all__ = ["Avat3rModel", "EncodedViews", "GaussianMaps", "ModelConfig", "SceneGaussians"]

_COLOUR_ACTIVATIONS = ("clamp", "sigmoid")
_POSITIVE_FIELDS = (
    "width",
    "self_layers",
    "heads",
    "patch_size",
    "image_size",
    "max_views",
    "expression_dim",
    "expression_hidden",
    "expression_tokens",
    "upsample_head_dim",
    "upsample_channel_decay",
    "upsample_min_width",
)


@dataclass
class ModelConfig:
    """Every size and switch of :class:`Avat3rModel`. Defaults are :meth:`paper`'s; world units are metres."""

    # -- transformer
    width: int = 768  # token width D
    self_layers: int = 8  # cross-view self-attention blocks (cached by encode)
    cross_layers: int = 8  # cross-attention blocks into the expression tokens
    heads: int = 12
    mlp_ratio: float = 4.0
    cross_self_attention: bool = False  # also self-attention inside every cross block
    # -- tokens
    patch_size: int = 8
    image_size: int = 512  # the token-position table is laid out for this input size (others resample)
    max_views: int = 8  # rows of the learned per-view encoding
    view_encoding: bool = True  # learned per-view encoding (breaks view-permutation symmetry)
    feature_dim: int = 1920  # Sapiens-2B embed dim
    use_features: bool = True  # off: Sapiens features ignored, no projection parameters
    use_positions: bool = True  # off: no position-map input, depth along rays, no confidence filter
    position_input_scale: float = 5.0  # position map (m) x this before tokenising: |p| <~ 0.2 m -> <~ 1
    # -- expression
    expression_dim: int = 256
    expression_hidden: int = 256
    expression_tokens: int = 4
    # -- upsampler
    upsample_steps: int = 1
    upsample_layers: int = 2
    upsample_window: int = 4096  # tokens per 1-D attention window (per view); 4096 = 32 rows at 128x128
    upsample_head_dim: int = 64  # GRM: heads = width / 64
    upsample_channel_decay: int = 2
    upsample_min_width: int = 64
    # -- Gaussian heads
    position_skip: bool = True  # means = input position map + offset (else depth along the ray)
    colour_skip: bool = True  # colours = input RGB + offset (else sigmoid)
    colour_activation: str = "clamp"  # with colour_skip: "clamp" (additive) or "sigmoid" (logit space)
    position_offset_scale: float = 0.01  # metres per unit of the position-offset head
    scale_min: float = 1e-4  # metres (GRM: 0.001 in a unit-radius object frame)
    scale_max: float = 0.03  # metres (GRM: 0.3)
    scale_init: float = 0.002  # metres: the scale head's starting value (~3 pixels at 512² on a head)
    opacity_shift: float = 2.0
    depth_near: float = 0.5  # metres from the camera centre (depth mode only)
    depth_far: float = 1.7
    confidence_threshold: float = 0.5  # keep = confidence >= threshold (position maps only)
    # -- memory
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in _POSITIVE_FIELDS:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cross_layers", "upsample_steps", "upsample_layers"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.use_features and self.feature_dim < 1:
            raise ValueError(f"ModelConfig.feature_dim must be >= 1, got {self.feature_dim}")
        if self.width % self.heads:
            raise ValueError(f"ModelConfig.width {self.width} is not divisible by heads {self.heads}")
        steps = 2**self.upsample_steps
        if self.patch_size % steps:
            raise ValueError(
                f"ModelConfig.patch_size {self.patch_size} is not divisible by 2^upsample_steps = {steps}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ModelConfig.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.colour_activation not in _COLOUR_ACTIVATIONS:
            raise ValueError(
                f"ModelConfig.colour_activation must be one of {_COLOUR_ACTIVATIONS}, "
                f"got {self.colour_activation!r}"
            )
        if not 0.0 < self.scale_min < self.scale_init < self.scale_max:
            raise ValueError(
                "ModelConfig needs 0 < scale_min < scale_init < scale_max, got "
                f"{self.scale_min}, {self.scale_init}, {self.scale_max}"
            )
        if not 0.0 <= self.depth_near < self.depth_far:
            raise ValueError(
                f"ModelConfig needs 0 <= depth_near < depth_far, got {self.depth_near}, {self.depth_far}"
            )
        if self.upsample_window < 1:
            raise ValueError(f"ModelConfig.upsample_window must be >= 1, got {self.upsample_window}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Build from a config section; an unknown key is an error naming it (a typo must not be ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig key(s) {unknown}; valid keys are: {', '.join(sorted(known))}"
            )
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def paper(cls, **changes: Any) -> ModelConfig:
        """The paper's network: D 768, 8 self + 8 cross layers, 12 heads, 8x8 patches of 512² crops,
        Sapiens-2B features (1920), a 256-dim expression code as 4 tokens, one upsampling step."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> ModelConfig:
        """A CPU-sized network for the demo: 128² crops, 16x16 token grid, the tiny Sapiens' 64 features."""
        base = cls(
            width=64,
            self_layers=2,
            cross_layers=2,
            heads=2,
            image_size=128,
            feature_dim=64,
            upsample_window=256,
            upsample_head_dim=16,
            upsample_min_width=32,
        )
        return dataclasses.replace(base, **changes)


@dataclass
class EncodedViews:
    """Everything :meth:`Avat3rModel.decode` needs that does not depend on the expression.

    tokens (B, V·h·w, D) after the cross-view encoder; per-pixel inputs channels-last (B, V, S, S, k):
    rgb in [0, 1], position (position skip only), ray_dir (depth mode only); ray_origin (B, V, 3) camera
    centres (depth mode only); keep (B, V, S, S) the confidence filter.
    """

    tokens: torch.Tensor
    grid: tuple[int, int]
    rgb: torch.Tensor
    keep: torch.Tensor
    position: torch.Tensor | None = None
    ray_origin: torch.Tensor | None = None
    ray_dir: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.rgb.shape[1])

    def expand(self, n: int) -> EncodedViews:
        """Repeat a single-avatar cache ``n`` times (drive one avatar with ``n`` expressions at once)."""
        if self.batch_size != 1:
            raise ValueError(f"only a cache of batch size 1 can be expanded, got {self.batch_size}")

        def rep(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.expand(n, *t.shape[1:])

        return EncodedViews(
            tokens=rep(self.tokens),  # type: ignore[arg-type]
            grid=self.grid,
            rgb=rep(self.rgb),  # type: ignore[arg-type]
            keep=rep(self.keep),  # type: ignore[arg-type]
            position=rep(self.position),
            ray_origin=rep(self.ray_origin),
            ray_dir=rep(self.ray_dir),
        )


def camera_centers(w2c: torch.Tensor) -> torch.Tensor:
    """World-space camera centres ``-Rᵀt`` of world-to-camera matrices ``(..., 4, 4)`` -> ``(..., 3)``."""
    rotation, translation = w2c[..., :3, :3], w2c[..., :3, 3]
    return -torch.einsum("...ji,...j->...i", rotation, translation)


class Avat3rModel(nn.Module):
    """Avat3r: ``encode(batch)`` once per avatar, ``decode(cache, expression)`` per frame.

    ``batch`` holds the loader's fields with a leading batch dimension (``Avat3rShardDataset``):
    ``input_rgb`` (B, V, 3, S, S) in [0, 1], ``plucker`` (B, V, 6, S, S) moment first, ``position``
    (B, V, 3, S, S) and ``confidence`` (B, V, 1, S, S) when ``use_positions``, ``features``
    (B, V, C, h', w') when ``use_features``, ``input_w2c`` (B, V, 4, 4) when positions come from depths,
    ``expression`` (B, E) for :meth:`forward`. Any V in 1..max_views and any S divisible by the patch.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.gradient_checkpointing = cfg.gradient_checkpointing
        d = cfg.width
        self.in_channels = 3 + 6 + (3 if cfg.use_positions else 0)
        self.tokenizer = nn.Conv2d(
            self.in_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.feature_norm: nn.LayerNorm | None = None
        self.feature_proj: nn.Linear | None = None
        if cfg.use_features:
            self.feature_norm = nn.LayerNorm(cfg.feature_dim)
            self.feature_proj = nn.Linear(cfg.feature_dim, d)
        grid = cfg.image_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, d))
        self.view_embed = nn.Parameter(torch.zeros(cfg.max_views, d)) if cfg.view_encoding else None
        self.token_norm = nn.LayerNorm(d)
        self.self_blocks = nn.ModuleList(
            SelfAttentionBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.self_layers)
        )
        self.expression_mlp = nn.Sequential(
            nn.Linear(cfg.expression_dim, cfg.expression_hidden),
            nn.ReLU(),
            nn.Linear(cfg.expression_hidden, cfg.expression_tokens * d),
        )
        self.cross_blocks = nn.ModuleList(
            CrossAttentionBlock(d, cfg.heads, cfg.mlp_ratio, self_attention=cfg.cross_self_attention)
            for _ in range(cfg.cross_layers)
        )
        self.upsampler = Upsampler(
            d,
            cfg.upsample_steps,
            cfg.upsample_layers,
            cfg.upsample_head_dim,
            cfg.upsample_window,
            channel_decay=cfg.upsample_channel_decay,
            min_width=cfg.upsample_min_width,
            mlp_ratio=cfg.mlp_ratio,
        )
        self.position_mode = "offset" if cfg.use_positions and cfg.position_skip else "depth"
        self.init_weights()
        # After the generic init: the heads carry their own (zero offsets, identity rotations, ...).
        self.heads = GaussianHeads(
            self.upsampler.out_width,
            cfg.patch_size // 2**cfg.upsample_steps,
            position_mode=self.position_mode,
            colour_skip=cfg.colour_skip,
            colour_activation=cfg.colour_activation,
            position_offset_scale=cfg.position_offset_scale,
            scale_min=cfg.scale_min,
            scale_max=cfg.scale_max,
            scale_init=cfg.scale_init,
            opacity_shift=cfg.opacity_shift,
            depth_near=cfg.depth_near,
            depth_far=cfg.depth_far,
        )

    @torch.no_grad()
    def init_weights(self) -> None:
        """ViT/MAE-style init: Xavier-uniform linear layers and patch embedding, N(0, 0.02) embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.tokenizer.weight
        bound = math.sqrt(6.0 / (w[0].numel() + w.shape[0]))
        nn.init.uniform_(w, -bound, bound)
        nn.init.normal_(self.pos_embed, std=0.02)
        if self.view_embed is not None:
            nn.init.normal_(self.view_embed, std=0.02)
        if isinstance(getattr(self, "heads", None), GaussianHeads):
            self.heads.reset_parameters()

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks in the backward pass (training only): trades ~30% time for memory."""
        self.gradient_checkpointing = bool(enabled)

    @property
    def _checkpointing(self) -> bool:
        return self.gradient_checkpointing and self.training

    # ------------------------------------------------------------------ encode
    def _position_encoding(self, h: int, w: int) -> torch.Tensor:
        table = self.pos_embed
        if table.shape[1:3] == (h, w):
            return table
        resized = F.interpolate(table.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)
        return resized.permute(0, 2, 3, 1)

    def encode(self, batch: Mapping[str, torch.Tensor]) -> EncodedViews:
        """Tokenise the input views and run the cross-view encoder: the expression-independent part."""
        cfg = self.config
        rgb = batch["input_rgb"]
        if rgb.ndim != 5 or rgb.shape[2] != 3:
            raise ValueError(f"input_rgb must be (B, V, 3, S, S), got {tuple(rgb.shape)}")
        b, v, _, s, s2 = rgb.shape
        if s != s2 or s % cfg.patch_size:
            raise ValueError(
                f"input views must be square with a side divisible by {cfg.patch_size}, got {s}x{s2}"
            )
        if not 1 <= v <= cfg.max_views:
            raise ValueError(f"{v} input views given, the model supports 1..{cfg.max_views}")
        dtype = self.tokenizer.weight.dtype
        parts = [rgb * 2.0 - 1.0, batch["plucker"]]
        if cfg.use_positions:
            parts.append(batch["position"] * cfg.position_input_scale)
        x = torch.cat([p.to(dtype) for p in parts], dim=2).flatten(0, 1)  # (B·V, C_in, S, S)
        tokens = self.tokenizer(x).permute(0, 2, 3, 1)  # (B·V, h, w, D)
        h, w = tokens.shape[1:3]
        if self.feature_proj is not None and self.feature_norm is not None:
            feats = batch["features"].to(dtype).flatten(0, 1)
            if feats.shape[1] != cfg.feature_dim:
                raise ValueError(
                    f"features have {feats.shape[1]} channels, the model expects {cfg.feature_dim}"
                )
            if feats.shape[-2:] != (h, w):
                feats = F.interpolate(feats, size=(h, w), mode="bilinear", align_corners=False)
            tokens = tokens + self.feature_proj(self.feature_norm(feats.permute(0, 2, 3, 1)))
        tokens = tokens + self._position_encoding(h, w)
        tokens = tokens.reshape(b, v, h * w, -1)
        if self.view_embed is not None:
            tokens = tokens + self.view_embed[:v, None, :]
        tokens = self.token_norm(tokens.reshape(b, v * h * w, -1))
        for block in self.self_blocks:
            tokens = run_block(block, tokens, use_checkpoint=self._checkpointing)

        pixels = {"rgb": rgb.permute(0, 1, 3, 4, 2)}
        if cfg.use_positions:
            keep = batch["confidence"][:, :, 0] >= cfg.confidence_threshold
        else:
            keep = torch.ones(b, v, s, s, dtype=torch.bool, device=rgb.device)
        if self.position_mode == "offset":
            pixels["position"] = batch["position"].permute(0, 1, 3, 4, 2)
        else:
            if "input_w2c" not in batch:
                raise ValueError("positions from depths need the input cameras (batch['input_w2c'])")
            pixels["ray_origin"] = camera_centers(batch["input_w2c"].float())
            pixels["ray_dir"] = F.normalize(batch["plucker"][:, :, 3:6].float(), dim=2).permute(0, 1, 3, 4, 2)
        return EncodedViews(tokens=tokens, grid=(h, w), keep=keep, **pixels)

    # ------------------------------------------------------------------ decode
    def expression_tokens(self, expression: torch.Tensor) -> torch.Tensor:
        """``(B, expression_dim)`` -> ``(B, expression_tokens, D)``."""
        cfg = self.config
        if expression.ndim != 2 or expression.shape[1] != cfg.expression_dim:
            raise ValueError(f"expression must be (B, {cfg.expression_dim}), got {tuple(expression.shape)}")
        out = self.expression_mlp(expression.to(self.tokenizer.weight.dtype))
        return out.view(expression.shape[0], cfg.expression_tokens, cfg.width)

    def decode(self, cache: EncodedViews, expression: torch.Tensor) -> GaussianMaps:
        """Cross-attend the cached view tokens to the expression, upsample, predict the Gaussians.

        A cache of batch size 1 is broadcast over a batch of expressions (one avatar, many frames).
        """
        if cache.batch_size == 1 and expression.shape[0] > 1:
            cache = cache.expand(expression.shape[0])
        if expression.shape[0] != cache.batch_size:
            raise ValueError(
                f"{expression.shape[0]} expressions for a cache of batch size {cache.batch_size}"
            )
        context = self.expression_tokens(expression)
        x = cache.tokens
        for block in self.cross_blocks:
            x = run_block(block, x, context, use_checkpoint=self._checkpointing)
        b, v = cache.batch_size, cache.num_views
        h, w = cache.grid
        x = self.upsampler(x.reshape(b * v, h, w, -1), use_checkpoint=self._checkpointing)
        return self.heads(
            x,
            b,
            rgb=cache.rgb,
            keep=cache.keep,
            position=cache.position,
            ray_origin=cache.ray_origin,
            ray_dir=cache.ray_dir,
        )

    def forward(self, batch: Mapping[str, torch.Tensor]) -> GaussianMaps:
        """``decode(encode(batch), batch["expression"])``."""
        return self.decode(self.encode(batch), batch["expression"])

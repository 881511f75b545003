"""AsymmetricCroCo3DStereo: the DUSt3R network (shared ViT encoder, two cross-attending decoders, two heads).

An independent PyTorch re-implementation of naver/dust3r ``dust3r/model.py`` on top of CroCo, keeping the
constructor argument names and every state-dict key of the released checkpoints, so those load strictly.
View 1's head predicts view 1's pointmap in view 1's camera frame; view 2's head predicts view 2's
pointmap *also in view 1's frame* (``pts3d_in_other_view``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from .blocks import Block, DecoderBlock
from .heads import LinearPts3d, Mode, PixelwiseTaskWithDPT
from .patch_embed import PATCH_EMBEDS
from .rope import RoPE2D

inf = math.inf

View = dict[str, Any]
Prediction = dict[str, torch.Tensor]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


class AsymmetricCroCo3DStereo(nn.Module):
    """DUSt3R. Defaults are CroCo's/DUSt3R's constructor defaults; the released models use ViT-L/ViT-B sizes.

    ``norm_layer`` defaults to LayerNorm with eps 1e-6 (CroCo), which the released weights were trained with.
    ``mask_ratio`` is accepted for signature parity (it only drives CroCo pre-training masking).
    """

    def __init__(
        self,
        output_mode: str = "pts3d",
        head_type: str = "linear",
        depth_mode: Mode = ("exp", -inf, inf),
        conf_mode: Mode | None = ("exp", 1, inf),
        freeze: str = "none",
        landscape_only: bool = True,
        patch_embed_cls: str = "PatchEmbedDust3R",
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        mask_ratio: float = 0.9,
        enc_embed_dim: int = 768,
        enc_depth: int = 12,
        enc_num_heads: int = 12,
        dec_embed_dim: int = 512,
        dec_depth: int = 8,
        dec_num_heads: int = 16,
        mlp_ratio: float = 4,
        norm_layer: Callable[[int], nn.Module] | None = None,
        norm_im2_in_dec: bool = True,
        pos_embed: str = "cosine",
    ) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = partial(nn.LayerNorm, eps=1e-6)
        if patch_embed_cls not in PATCH_EMBEDS:
            raise ValueError(
                f"patch_embed_cls must be one of {sorted(PATCH_EMBEDS)}, got {patch_embed_cls!r}"
            )
        img_hw = _pair(img_size)
        if img_hw[0] % patch_size or img_hw[1] % patch_size:
            raise ValueError(f"img_size={img_hw} must be a multiple of patch_size={patch_size}")
        if output_mode != "pts3d":
            raise ValueError(f"only output_mode='pts3d' exists upstream, got {output_mode!r}")
        if not pos_embed.startswith("RoPE"):
            # The released models all use RoPE100; the 'cosine' absolute embedding is tied to img_size and
            # would add enc_pos_embed/dec_pos_embed buffers. Not needed here, so refuse rather than guess.
            raise NotImplementedError(f"only pos_embed='RoPE<freq>' is implemented, got {pos_embed!r}")

        self.output_mode = output_mode
        self.head_type = head_type
        self.depth_mode = tuple(depth_mode)
        self.conf_mode = tuple(conf_mode) if conf_mode is not None else None
        self.landscape_only = landscape_only
        self.patch_embed_cls = patch_embed_cls
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.pos_embed = pos_embed
        self.enc_embed_dim, self.enc_depth = enc_embed_dim, enc_depth
        self.dec_embed_dim, self.dec_depth = dec_embed_dim, dec_depth

        self.patch_embed = PATCH_EMBEDS[patch_embed_cls](img_hw, patch_size, 3, enc_embed_dim)
        self.rope = RoPE2D(freq=float(pos_embed[len("RoPE") :]))
        self.enc_blocks = nn.ModuleList(
            [
                Block(
                    enc_embed_dim,
                    enc_num_heads,
                    mlp_ratio,
                    qkv_bias=True,
                    norm_layer=norm_layer,
                    rope=self.rope,
                )
                for _ in range(enc_depth)
            ]
        )
        self.enc_norm = norm_layer(enc_embed_dim)
        # Unused at inference (CroCo pre-training placeholder) but present in every released checkpoint.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_embed_dim))
        self.decoder_embed = nn.Linear(enc_embed_dim, dec_embed_dim, bias=True)

        def decoder() -> nn.ModuleList:
            return nn.ModuleList(
                [
                    DecoderBlock(
                        dec_embed_dim,
                        dec_num_heads,
                        mlp_ratio,
                        qkv_bias=True,
                        norm_layer=norm_layer,
                        norm_mem=norm_im2_in_dec,
                        rope=self.rope,
                    )
                    for _ in range(dec_depth)
                ]
            )

        self.dec_blocks = decoder()
        self.dec_norm = norm_layer(dec_embed_dim)
        self.dec_blocks2 = decoder()

        def head() -> nn.Module:
            if head_type == "linear":
                return LinearPts3d(dec_embed_dim, patch_size, self.depth_mode, self.conf_mode)
            if head_type == "dpt":
                return PixelwiseTaskWithDPT(
                    enc_embed_dim, dec_embed_dim, dec_depth, patch_size, self.depth_mode, self.conf_mode
                )
            raise ValueError(f"head_type must be 'linear' or 'dpt', got {head_type!r}")

        self.downstream_head1 = head()
        self.downstream_head2 = head()
        self.set_freeze(freeze)

    def set_freeze(self, freeze: str) -> None:
        """Fine-tuning switch kept from upstream: 'none', 'mask' or 'encoder'."""
        groups: dict[str, list[nn.Module | nn.Parameter]] = {
            "none": [],
            "mask": [self.mask_token],
            "encoder": [self.mask_token, self.patch_embed, self.enc_blocks],
        }
        if freeze not in groups:
            raise ValueError(f"freeze must be one of {sorted(groups)}, got {freeze!r}")
        self.freeze = freeze
        for item in groups[freeze]:
            params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
            for p in params:
                p.requires_grad_(False)

    # -- encoder / decoder / heads, exposed separately so batched inference can encode each image once --

    def encode(self, img: torch.Tensor, true_shape: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) -> tokens (B,N,enc_dim) after ``enc_norm`` and their (B,N,2) grid positions."""
        x, pos = self.patch_embed(img, true_shape=true_shape)
        for blk in self.enc_blocks:
            x = blk(x, pos)
        return self.enc_norm(x), pos

    def decode(
        self, f1: torch.Tensor, pos1: torch.Tensor, f2: torch.Tensor, pos2: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both decoders in lock-step; returns per view [encoder tokens, layer 1, ..., layer D (dec_norm)]."""
        out1, out2 = [f1], [f2]
        x1, x2 = self.decoder_embed(f1), self.decoder_embed(f2)
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2, strict=True):
            # Both sides read the previous layer's outputs of both views.
            x1, x2 = blk1(x1, x2, pos1, pos2)[0], blk2(x2, x1, pos2, pos1)[0]
            out1.append(x1)
            out2.append(x2)
        out1[-1] = self.dec_norm(out1[-1])
        out2[-1] = self.dec_norm(out2[-1])
        return out1, out2

    def _head(self, head: nn.Module, decout: list[torch.Tensor], true_shape: torch.Tensor) -> Prediction:
        # Heads run in fp32 even under autocast, as upstream (exp activations are precision sensitive).
        with torch.autocast(device_type=decout[-1].device.type, enabled=False):
            toks = [t.float() for t in decout]
            if not self.landscape_only:
                if not bool((true_shape == true_shape[0:1]).all()):
                    raise ValueError("all true_shape entries in a batch must be identical")
                h, w = (int(v) for v in true_shape[0].tolist())
                return head(toks, (h, w))
            return self._head_landscape(head, toks, true_shape)

    @staticmethod
    def _head_landscape(head: nn.Module, toks: list[torch.Tensor], true_shape: torch.Tensor) -> Prediction:
        """Training-time layout: the head runs in landscape and portrait results are transposed back."""
        h, w = int(true_shape.min()), int(true_shape.max())
        landscape = true_shape[:, 1] >= true_shape[:, 0]
        if bool(landscape.all()):
            return head(toks, (h, w))
        if not bool(landscape.any()):
            return {k: v.swapaxes(1, 2) for k, v in head(toks, (w, h)).items()}
        res_l = head([t[landscape] for t in toks], (h, w))
        res_p = {k: v.swapaxes(1, 2) for k, v in head([t[~landscape] for t in toks], (w, h)).items()}
        out = {}
        for k in res_l:
            x = res_l[k].new_empty((len(true_shape), *res_l[k].shape[1:]))
            x[landscape] = res_l[k]
            x[~landscape] = res_p[k]
            out[k] = x
        return out

    def heads(
        self,
        dec1: list[torch.Tensor],
        dec2: list[torch.Tensor],
        shape1: torch.Tensor,
        shape2: torch.Tensor,
    ) -> tuple[Prediction, Prediction]:
        """Run both heads; view 2's points become ``pts3d_in_other_view`` (they are in view 1's frame)."""
        res1 = self._head(self.downstream_head1, dec1, shape1)
        res2 = self._head(self.downstream_head2, dec2, shape2)
        res2["pts3d_in_other_view"] = res2.pop("pts3d")
        return res1, res2

    def forward(self, view1: View, view2: View) -> tuple[Prediction, Prediction]:
        """Official call convention: views are dicts with 'img' (B,3,H,W) and optional 'true_shape' (B,2)."""
        img1, img2 = view1["img"], view2["img"]
        b = img1.shape[0]
        shape1 = view1.get("true_shape")
        shape2 = view2.get("true_shape")
        if shape1 is None:
            shape1 = torch.tensor(img1.shape[-2:], device=img1.device)[None].repeat(b, 1)
        if shape2 is None:
            shape2 = torch.tensor(img2.shape[-2:], device=img2.device)[None].repeat(b, 1)
        if img1.shape[-2:] == img2.shape[-2:]:
            # One encoder pass over both views; mixed orientations must be encoded separately.
            feat, pos = self.encode(torch.cat((img1, img2)), torch.cat((shape1, shape2)))
            f1, f2 = feat.chunk(2)
            p1, p2 = pos.chunk(2)
        else:
            f1, p1 = self.encode(img1, shape1)
            f2, p2 = self.encode(img2, shape2)
        dec1, dec2 = self.decode(f1, p1, f2, p2)
        return self.heads(dec1, dec2, shape1, shape2)

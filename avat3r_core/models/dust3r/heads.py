"""DUSt3R prediction heads (linear and DPT) and the pts3d/conf activations.

Names follow dust3r/heads and croco/models/dpt_block.py so the keys match: ``proj.*`` for the linear
head; ``dpt.act_postprocess.*``, ``dpt.scratch.layer{1..4}_rn`` (also reachable, and therefore saved a
second time, as ``dpt.scratch.layer_rn.{0..3}``), ``dpt.scratch.refinenet{1..4}.*`` and ``dpt.head.{0,2,4}``
for the DPT head. The croco ``act_{1..4}_postprocess`` duplicates are deleted upstream, so they are absent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Mode = tuple[str, float, float]


def reg_dense_depth(xyz: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Map raw (..., 3) head output to points; 'exp' keeps the direction and sets the norm to expm1(|xyz|)."""
    kind, vmin, vmax = mode
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"depth_mode bounds other than (-inf, inf) are not supported upstream, got {mode}")
    if kind == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    unit = xyz / d.clip(min=1e-8)
    if kind == "square":
        return unit * d.square()
    if kind == "exp":
        return unit * torch.expm1(d)
    raise ValueError(f"unknown depth_mode {kind!r}")


def reg_dense_conf(x: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Map the raw confidence channel; 'exp' gives vmin + exp(x) (so conf >= 1 for the released models)."""
    kind, vmin, vmax = mode
    if kind == "exp":
        return vmin + x.exp().clip(max=vmax - vmin)
    if kind == "sigmoid":
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f"unknown conf_mode {kind!r}")


def postprocess(out: torch.Tensor, depth_mode: Mode, conf_mode: Mode | None) -> dict[str, torch.Tensor]:
    """(B, 3[+1], H, W) -> {'pts3d': (B, H, W, 3), 'conf': (B, H, W)}."""
    fmap = out.permute(0, 2, 3, 1)
    res = {"pts3d": reg_dense_depth(fmap[..., 0:3], depth_mode)}
    if conf_mode is not None:
        res["conf"] = reg_dense_conf(fmap[..., 3], conf_mode)
    return res


class LinearPts3d(nn.Module):
    """Each decoder token predicts a patch x patch block of points (+conf), unfolded by pixel_shuffle."""

    def __init__(self, dec_embed_dim: int, patch_size: int, depth_mode: Mode, conf_mode: Mode | None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.depth_mode = depth_mode
        self.conf_mode = conf_mode
        has_conf = bool(conf_mode)
        self.proj = nn.Linear(dec_embed_dim, (3 + has_conf) * patch_size**2)

    def forward(self, decout: Sequence[torch.Tensor], img_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        h, w = img_shape
        tokens = decout[-1]
        b = tokens.shape[0]
        feat = self.proj(tokens).transpose(-1, -2).reshape(b, -1, h // self.patch_size, w // self.patch_size)
        return postprocess(F.pixel_shuffle(feat, self.patch_size), self.depth_mode, self.conf_mode)


class ResidualConvUnit(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input (no batch norm in DUSt3R)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + x


class FeatureFusionBlock(nn.Module):
    """Adds the refined skip input, refines, upsamples x2 (bilinear, align_corners=True), 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Projection convs to the common feature dim and the four fusion stages.

    ``layer_rn`` is a ModuleList holding the *same* four convs as ``layer{1..4}_rn``: the official module
    tree has both, so its state dict carries both names and a strict load must too.
    """

    def __init__(self, layer_dims: Sequence[int], feature_dim: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(layer_dims[0], feature_dim, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(layer_dims[1], feature_dim, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(layer_dims[2], feature_dim, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(layer_dims[3], feature_dim, kernel_size=3, padding=1, bias=False)
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        self.refinenet1 = FeatureFusionBlock(feature_dim)
        self.refinenet2 = FeatureFusionBlock(feature_dim)
        self.refinenet3 = FeatureFusionBlock(feature_dim)
        self.refinenet4 = FeatureFusionBlock(feature_dim)


class _Upsample(nn.Module):
    """Parameter-free bilinear x2 (align_corners=True); occupies index 1 of the head Sequential."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DPTOutputAdapter(nn.Module):
    """DPT decoder over 4 hooked token maps, rescaled to 4x, 2x, 1x and 1/2 of the patch grid."""

    def __init__(
        self,
        num_channels: int,
        hooks: Sequence[int],
        dim_tokens: Sequence[int],
        patch_size: int = 16,
        layer_dims: Sequence[int] = (96, 192, 384, 768),
        feature_dim: int = 256,
        last_dim: int = 128,
    ) -> None:
        super().__init__()
        self.hooks = list(hooks)
        self.patch_size = patch_size
        ld = list(layer_dims)
        self.scratch = Scratch(ld, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, kernel_size=3, padding=1),
            _Upsample(),
            nn.Conv2d(feature_dim // 2, last_dim, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, num_channels, kernel_size=1),
        )
        self.act_postprocess = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(dim_tokens[0], ld[0], kernel_size=1),
                    nn.ConvTranspose2d(ld[0], ld[0], kernel_size=4, stride=4),
                ),
                nn.Sequential(
                    nn.Conv2d(dim_tokens[1], ld[1], kernel_size=1),
                    nn.ConvTranspose2d(ld[1], ld[1], kernel_size=2, stride=2),
                ),
                nn.Sequential(nn.Conv2d(dim_tokens[2], ld[2], kernel_size=1)),
                nn.Sequential(
                    nn.Conv2d(dim_tokens[3], ld[3], kernel_size=1),
                    nn.Conv2d(ld[3], ld[3], kernel_size=3, stride=2, padding=1),
                ),
            ]
        )

    def forward(self, tokens: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        h, w = image_size
        gh, gw = h // self.patch_size, w // self.patch_size
        layers = []
        for idx, hook in enumerate(self.hooks):
            t = tokens[hook]
            t = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)
            layers.append(self.scratch.layer_rn[idx](self.act_postprocess[idx](t)))
        s = self.scratch
        # The 1/2-grid map rounds up on odd grids; crop its x2 upsampling back to the 1x map's size.
        path4 = s.refinenet4(layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
        path3 = s.refinenet3(path4, layers[2])
        path2 = s.refinenet2(path3, layers[1])
        path1 = s.refinenet1(path2, layers[0])
        return self.head(path1)


class PixelwiseTaskWithDPT(nn.Module):
    """DUSt3R's DPT head: wraps the adapter as ``.dpt`` (hence the ``downstream_headN.dpt.*`` keys)."""

    def __init__(
        self,
        enc_embed_dim: int,
        dec_embed_dim: int,
        dec_depth: int,
        patch_size: int,
        depth_mode: Mode,
        conf_mode: Mode | None,
    ) -> None:
        super().__init__()
        if dec_depth <= 9:
            raise ValueError(f"the DPT head needs dec_depth > 9 (hooks at 0, d/2, 3d/4, d), got {dec_depth}")
        if patch_size != 16:
            raise ValueError(
                f"the DPT head's fixed x4/x2/x1/x0.5 pyramid upsamples 16x; patch_size={patch_size}"
            )
        self.depth_mode = depth_mode
        self.conf_mode = conf_mode
        d = dec_depth
        self.dpt = DPTOutputAdapter(
            num_channels=3 + bool(conf_mode),
            hooks=[0, d * 2 // 4, d * 3 // 4, d],
            dim_tokens=[enc_embed_dim, dec_embed_dim, dec_embed_dim, dec_embed_dim],
            patch_size=patch_size,
        )

    def forward(self, decout: Sequence[torch.Tensor], img_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        return postprocess(self.dpt(decout, img_shape), self.depth_mode, self.conf_mode)

"""BackgroundMattingV2 network (Lin et al. 2021), written so the released state dicts load key for key.

Module and attribute names follow upstream `PeterL1n/BackgroundMattingV2` (model/*.py, MIT) because the
released `pytorch_<backbone>.pth` files are plain state dicts keyed by them: `backbone.*`, `aspp.*`,
`decoder.*`, `refiner.*`. The encoders and ASPP are torchvision's own modules, as upstream uses them, so the
nested key layout (`backbone.features.N.conv.M...`, `aspp.convs.N...`) is torchvision's.

Everything here is TorchScript-compatible: the released TorchScript files are `torch.jit.script` exports of a
wrapper around `MattingRefine`, and the tests rebuild that layout from this code.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import MobileNetV2
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.segmentation.deeplabv3 import ASPP

BACKBONES = ("resnet50", "resnet101", "mobilenetv2")
REFINE_MODES = ("full", "sampling", "thresholding")
PATCH_CROP_METHODS = ("unfold", "roi_align", "gather")
PATCH_REPLACE_METHODS = ("scatter_nd", "scatter_element")

# Five feature maps, deepest first: (1/16, 1/8, 1/4, 1/2, 1/1 of the input).
Features = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
_RESNET_LAYERS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


class ResNetEncoder(ResNet):
    """torchvision ResNet with a 6-channel stem, dilation instead of stride in layer4 (output stride 16),
    and no classifier; returns the feature pyramid the decoder needs."""

    def __init__(self, in_channels: int, variant: str = "resnet101") -> None:
        super().__init__(
            Bottleneck, _RESNET_LAYERS[variant], replace_stride_with_dilation=[False, False, True]
        )
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        del self.avgpool
        del self.fc

    def forward(self, x: Tensor) -> Features:
        x0 = x
        x = self.relu(self.bn1(self.conv1(x)))
        x1 = x
        x = self.layer1(self.maxpool(x))
        x2 = x
        x = self.layer2(x)
        x3 = x
        x = self.layer4(self.layer3(x))
        return x, x3, x2, x1, x0


class MobileNetV2Encoder(MobileNetV2):
    """torchvision MobileNetV2 with a 6-channel stem, the last 1x1 block and the classifier removed, and
    blocks 15-17 dilated instead of block 14 striding (output stride 16)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels != 3:
            self.features[0][0] = nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False)
        self.features = self.features[:-1]
        self.features[14].conv[1][0].stride = (1, 1)
        for block in self.features[15:]:
            block.conv[1][0].dilation = (2, 2)
            block.conv[1][0].padding = (2, 2)
        del self.classifier

    def forward(self, x: Tensor) -> Features:
        x0 = x
        x1 = x
        x2 = x
        x3 = x
        for i, block in enumerate(self.features):
            x = block(x)
            if i == 1:
                x1 = x  # 1/2
            elif i == 3:
                x2 = x  # 1/4
            elif i == 6:
                x3 = x  # 1/8
        return x, x3, x2, x1, x0


class Decoder(nn.Module):
    """Upsamples the ASPP output step by step, concatenating the encoder's skip feature at each scale."""

    def __init__(self, channels: list[int], feature_channels: list[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_channels[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(feature_channels[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(feature_channels[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(feature_channels[3] + channels[3], channels[4], 3, padding=1)
        self.relu = nn.ReLU(True)

    @staticmethod
    def _up_cat(x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=(skip.shape[2], skip.shape[3]), mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def forward(self, x4: Tensor, x3: Tensor, x2: Tensor, x1: Tensor, x0: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(self._up_cat(x4, x3))))
        x = self.relu(self.bn2(self.conv2(self._up_cat(x, x2))))
        x = self.relu(self.bn3(self.conv3(self._up_cat(x, x1))))
        return self.conv4(self._up_cat(x, x0))


class Base(nn.Module):
    """DeepLabV3-style encoder + ASPP + decoder with arbitrary input/output channels."""

    def __init__(self, backbone: str, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown BGMv2 backbone {backbone!r}; expected one of {BACKBONES}")
        self.backbone: nn.Module
        if backbone in ("resnet50", "resnet101"):
            self.backbone = ResNetEncoder(in_channels, variant=backbone)
            self.aspp = ASPP(2048, [3, 6, 9])
            self.decoder = Decoder([256, 128, 64, 48, out_channels], [512, 256, 64, in_channels])
        else:
            self.backbone = MobileNetV2Encoder(in_channels)
            self.aspp = ASPP(320, [3, 6, 9])
            self.decoder = Decoder([256, 128, 64, 48, out_channels], [32, 24, 16, in_channels])

    def run(self, x: Tensor) -> Tensor:
        """Encoder-ASPP-decoder pass; output at the resolution of `x`."""
        x4, x3, x2, x1, x0 = self.backbone(x)
        return self.decoder(self.aspp(x4), x3, x2, x1, x0)

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x)


class MattingBase(Base):
    """The coarse network alone, run at the input resolution; returns (pha, fgr, err, hid).

    Channels of the raw output: 0 alpha, 1-3 foreground residual (added to src), 4 error, 5-36 hidden.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__(backbone, in_channels=6, out_channels=1 + 3 + 1 + 32)

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        x = self.run(torch.cat([src, bgr], dim=1))
        pha = x[:, 0:1].clamp(0.0, 1.0)
        fgr = x[:, 1:4].add(src).clamp(0.0, 1.0)
        err = x[:, 4:5].clamp(0.0, 1.0)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid


class Refiner(nn.Module):
    """Refines the coarse result at full resolution, only on the 4x4 patches it selects.

    mode 'full' refines everywhere with ordinary convolutions; 'sampling' refines the
    `sample_pixels // 16` patches with the largest predicted error (per image); 'thresholding' refines
    every patch whose error exceeds `threshold`. The crop/replace methods are upstream's compatibility
    options (all give the same numbers; 'unfold'/'scatter_nd' are the fast ones).
    """

    __constants__ = ("kernel_size", "patch_crop_method", "patch_replace_method")

    def __init__(
        self,
        mode: str,
        sample_pixels: int,
        threshold: float,
        kernel_size: int = 3,
        prevent_oversampling: bool = True,
        patch_crop_method: str = "unfold",
        patch_replace_method: str = "scatter_nd",
    ) -> None:
        super().__init__()
        if mode not in REFINE_MODES:
            raise ValueError(f"refine_mode {mode!r} not in {REFINE_MODES}")
        if kernel_size not in (1, 3):
            raise ValueError(f"refine_kernel_size must be 1 or 3, got {kernel_size}")
        if patch_crop_method not in PATCH_CROP_METHODS:
            raise ValueError(f"refine_patch_crop_method {patch_crop_method!r} not in {PATCH_CROP_METHODS}")
        if patch_replace_method not in PATCH_REPLACE_METHODS:
            raise ValueError(
                f"refine_patch_replace_method {patch_replace_method!r} not in {PATCH_REPLACE_METHODS}"
            )
        self.mode = mode
        self.sample_pixels = sample_pixels
        self.threshold = threshold
        self.kernel_size = kernel_size
        self.prevent_oversampling = prevent_oversampling
        self.patch_crop_method = patch_crop_method
        self.patch_replace_method = patch_replace_method

        self.conv1 = nn.Conv2d(32 + 6 + 4, 24, kernel_size, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.conv2 = nn.Conv2d(24, 16, kernel_size, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16 + 6, 12, kernel_size, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = nn.Conv2d(12, 4, kernel_size, bias=True)
        self.relu = nn.ReLU(True)

    def _stage1(self, x: Tensor) -> Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))

    def _stage2(self, x: Tensor) -> Tensor:
        return self.conv4(self.relu(self.bn3(self.conv3(x))))

    def forward(
        self, src: Tensor, bgr: Tensor, pha: Tensor, fgr: Tensor, err: Tensor, hid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Full-res src/bgr plus coarse pha/fgr-residual/err/hid -> (pha, fgr residual, ref at 1/4 res)."""
        h_full, w_full = src.shape[2], src.shape[3]
        h_half, w_half = h_full // 2, w_full // 2
        h_quat, w_quat = h_full // 4, w_full // 4
        src_bgr = torch.cat([src, bgr], dim=1)

        if self.mode == "full":
            x = F.interpolate(
                torch.cat([hid, pha, fgr], dim=1), (h_half, w_half), mode="bilinear", align_corners=False
            )
            y = F.interpolate(src_bgr, (h_half, w_half), mode="bilinear", align_corners=False)
            if self.kernel_size == 3:
                x = F.pad(x, (3, 3, 3, 3))
                y = F.pad(y, (3, 3, 3, 3))
            x = self._stage1(torch.cat([x, y], dim=1))
            if self.kernel_size == 3:
                x = F.interpolate(x, (h_full + 4, w_full + 4), mode="nearest")
                y = F.pad(src_bgr, (2, 2, 2, 2))
            else:
                x = F.interpolate(x, (h_full, w_full), mode="nearest")
                y = src_bgr
            x = self._stage2(torch.cat([x, y], dim=1))
            ref = torch.ones((src.shape[0], 1, h_quat, w_quat), device=src.device, dtype=src.dtype)
            return x[:, :1], x[:, 1:], ref

        err = F.interpolate(err, (h_quat, w_quat), mode="bilinear", align_corners=False)
        ref = self.select_refinement_regions(err)
        nz = torch.nonzero(ref.squeeze(1))
        idx = (nz[:, 0], nz[:, 1], nz[:, 2])
        if nz.shape[0] == 0:
            pha = F.interpolate(pha, (h_full, w_full), mode="bilinear", align_corners=False)
            fgr = F.interpolate(fgr, (h_full, w_full), mode="bilinear", align_corners=False)
            return pha, fgr, ref

        pad1 = 3 if self.kernel_size == 3 else 0
        x = F.interpolate(
            torch.cat([hid, pha, fgr], dim=1), (h_half, w_half), mode="bilinear", align_corners=False
        )
        x = self.crop_patch(x, idx, 2, pad1)
        y = F.interpolate(src_bgr, (h_half, w_half), mode="bilinear", align_corners=False)
        y = self.crop_patch(y, idx, 2, pad1)
        x = self._stage1(torch.cat([x, y], dim=1))

        x = F.interpolate(x, 8 if self.kernel_size == 3 else 4, mode="nearest")
        y = self.crop_patch(src_bgr, idx, 4, 2 if self.kernel_size == 3 else 0)
        x = self._stage2(torch.cat([x, y], dim=1))

        out = F.interpolate(
            torch.cat([pha, fgr], dim=1), (h_full, w_full), mode="bilinear", align_corners=False
        )
        out = self.replace_patch(out, x, idx)
        return out[:, :1], out[:, 1:], ref

    def select_refinement_regions(self, err: Tensor) -> Tensor:
        """err (B,1,h,w) -> float map (B,1,h,w), 1 where a 4x4 full-res patch gets refined."""
        if self.mode == "sampling":
            b, _, h, w = err.shape
            flat = err.view(b, -1)
            # Upstream asks topk for sample_pixels // 16 cells even when the image has fewer (small inputs
            # with the 80k default) and crashes; capping at all cells keeps every other case identical.
            top = flat.topk(min(self.sample_pixels // 16, h * w), dim=1, sorted=False).indices
            ref = torch.zeros_like(flat).scatter_(1, top, 1.0)
            if self.prevent_oversampling:
                ref = ref * flat.gt(0).to(ref.dtype)  # never spend the budget on error-free patches
            return ref.view(b, 1, h, w)
        return err.gt(self.threshold).to(err.dtype)

    def crop_patch(self, x: Tensor, idx: tuple[Tensor, Tensor, Tensor], size: int, padding: int) -> Tensor:
        """Cut (P, C, size+2*padding, size+2*padding) patches at grid cells idx=(b, row, col), stride size."""
        if padding != 0:
            x = F.pad(x, (padding, padding, padding, padding))
        out = size + 2 * padding
        if self.patch_crop_method == "unfold":
            windows = x.permute(0, 2, 3, 1).unfold(1, out, size).unfold(2, out, size)
            return windows[idx[0], idx[1], idx[2]]
        if self.patch_crop_method == "roi_align":
            b, r, c = idx[0].to(x.dtype), idx[1].to(x.dtype), idx[2].to(x.dtype)
            # Box corners half a pixel outside the pixel centres: one sample per bin lands on each centre.
            boxes = torch.stack(
                [b, c * size - 0.5, r * size - 0.5, c * size + out - 0.5, r * size + out - 0.5], 1
            )
            return torchvision.ops.roi_align(x, boxes, out, sampling_ratio=1)
        pixels = self.compute_pixel_indices(x, idx, size, padding)
        return torch.gather(x.reshape(-1), 0, pixels.view(-1)).view(-1, x.shape[1], out, out)

    def replace_patch(self, x: Tensor, y: Tensor, idx: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Write patches y (P, C, h, w) into x (B, C, H, W) at grid cells idx=(b, row, col)."""
        xb, xc, xh, xw = x.shape
        yh, yw = y.shape[2], y.shape[3]
        if self.patch_replace_method == "scatter_nd":
            grid = x.view(xb, xc, xh // yh, yh, xw // yw, yw).permute(0, 2, 4, 1, 3, 5)
            grid[idx[0], idx[1], idx[2]] = y
            return grid.permute(0, 3, 1, 4, 2, 5).reshape(xb, xc, xh, xw)
        pixels = self.compute_pixel_indices(x, idx, yh, 0)
        return x.reshape(-1).scatter(0, pixels.view(-1), y.reshape(-1)).view(xb, xc, xh, xw)

    def compute_pixel_indices(
        self, x: Tensor, idx: tuple[Tensor, Tensor, Tensor], size: int, padding: int
    ) -> Tensor:
        """Flat indices into x.view(-1) of every pixel of every patch: (P, C, size+2p, size+2p)."""
        _, c, h, w = x.shape
        out = size + 2 * padding
        channel = torch.arange(c, device=x.device).view(c, 1, 1) * (h * w)
        row = torch.arange(out, device=x.device).view(1, out, 1) * w
        col = torch.arange(out, device=x.device).view(1, 1, out)
        within = channel + row + col
        origin = idx[0] * (c * h * w) + idx[1] * (size * w) + idx[2] * size
        return origin.view(-1, 1, 1, 1) + within.unsqueeze(0)


class MattingRefine(MattingBase):
    """Coarse pass at `backbone_scale` of the input, then the refiner at full resolution.

    Returns (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm); inputs are RGB in [0, 1] (no mean/std), (B,3,H,W)
    with H and W divisible by 4.
    """

    def __init__(
        self,
        backbone: str,
        backbone_scale: float = 0.25,
        refine_mode: str = "sampling",
        refine_sample_pixels: int = 80_000,
        refine_threshold: float = 0.1,
        refine_kernel_size: int = 3,
        refine_prevent_oversampling: bool = True,
        refine_patch_crop_method: str = "unfold",
        refine_patch_replace_method: str = "scatter_nd",
    ) -> None:
        if not 0.0 < backbone_scale <= 0.5:
            raise ValueError(f"backbone_scale must be in (0, 1/2], got {backbone_scale}")
        super().__init__(backbone)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(
            refine_mode,
            refine_sample_pixels,
            refine_threshold,
            refine_kernel_size,
            refine_prevent_oversampling,
            refine_patch_crop_method,
            refine_patch_replace_method,
        )

    def forward(  # type: ignore[override]
        self, src: Tensor, bgr: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        if src.shape != bgr.shape:
            raise ValueError("src and bgr must have the same shape")
        if src.shape[2] % 4 != 0 or src.shape[3] % 4 != 0:
            raise ValueError("src and bgr height and width must be divisible by 4")
        src_sm = F.interpolate(
            src,
            scale_factor=self.backbone_scale,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=True,
        )
        bgr_sm = F.interpolate(
            bgr,
            scale_factor=self.backbone_scale,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=True,
        )
        x = self.run(torch.cat([src_sm, bgr_sm], dim=1))
        pha_sm = x[:, 0:1].clamp(0.0, 1.0)
        fgr_residual_sm = x[:, 1:4]
        err_sm = x[:, 4:5].clamp(0.0, 1.0)
        hid_sm = x[:, 5:].relu()

        pha, fgr_residual, ref_sm = self.refiner(src, bgr, pha_sm, fgr_residual_sm, err_sm, hid_sm)
        pha = pha.clamp(0.0, 1.0)
        fgr = fgr_residual.add(src).clamp(0.0, 1.0)
        fgr_sm = src_sm.add(fgr_residual_sm).clamp(0.0, 1.0)
        return pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm

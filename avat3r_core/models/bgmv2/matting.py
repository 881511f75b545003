"""Batched BackgroundMattingV2 inference on uint8 frames with a clean plate each: the matting stage's API.

Size handling. Upstream MattingRefine asserts H and W divisible by 4: the refiner replaces 4x4 full-res
patches (a view of the image as a grid of 4x4 cells) and crops 2x2 cells at half resolution. The coarse pass
has no hard constraint: it downsamples with `recompute_scale_factor=True`, i.e. to floor(H*scale), and every
later resampling goes to an explicit size. We still pad to a multiple of lcm(4, 1/backbone_scale) when
1/backbone_scale is an integer (4 for the default 0.25, 8 for 0.125) so the coarse grid is an exact integer
downsampling of the frame, as in training; it costs a few rows at most.

Padding is replicate (edge) padding of both frame and plate, at the bottom/right, cropped off afterwards.
Zero padding would put a hard black border into both inputs: src equals bgr there, but the border edge
falls inside the receptive field of the coarse network (ASPP dilations reach far at 1/16 res) and its error
map, and in sampling mode patches along the artificial edge compete for the fixed refinement budget.
Replicate padding continues the image, so a subject touching the frame edge (shoulders at the bottom of a
head capture) stays consistent in both inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from avat3r_core.models.bgmv2.checkpoint import is_torchscript_file, load_model, load_torchscript
from avat3r_core.models.bgmv2.network import BACKBONES, REFINE_MODES

PRECISIONS = ("fp32", "fp16")


def pad_multiple(backbone_scale: float) -> int:
    """Multiple that H and W are padded to: 4 (refiner patches), times the integer downsampling if any."""
    factor = 1.0 / backbone_scale
    if abs(factor - round(factor)) < 1e-6:
        return math.lcm(4, round(factor))
    return 4


def _check_frames(array: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 numpy array, got {getattr(array, 'dtype', type(array))}")
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, H, W, 3), got {array.shape}")
    return array


class BGMv2Matter:
    """Loads a BGMv2 checkpoint once and mattes batches of (frame, clean plate) pairs.

    The checkpoint may be a released state dict (`pytorch_<backbone>.pth`) or a released TorchScript export
    (`torchscript_<backbone>_fp32/fp16.pth`); the type is detected from the file. On CPU it always runs fp32
    (half-precision convolutions on CPU are slow or unsupported); on CUDA `precision="fp16"` halves it.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        backbone: str = "resnet50",
        refine_mode: str = "sampling",
        backbone_scale: float = 0.25,
        refine_sample_pixels: int = 80_000,
        refine_threshold: float = 0.1,
        device: str | None = None,
        batch_size: int = 4,
        precision: str = "fp32",
    ) -> None:
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r} not in {BACKBONES}")
        if refine_mode not in REFINE_MODES:
            raise ValueError(f"refine_mode {refine_mode!r} not in {REFINE_MODES}")
        if not 0.0 < backbone_scale <= 0.5:
            raise ValueError(f"backbone_scale must be in (0, 1/2], got {backbone_scale}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint = Path(checkpoint)
        self.backbone, self.refine_mode, self.backbone_scale = backbone, refine_mode, float(backbone_scale)
        self.refine_sample_pixels, self.refine_threshold = int(refine_sample_pixels), float(refine_threshold)
        self.batch_size = int(batch_size)
        self.device = torch.device(
            device if device is not None else "cuda" if torch.cuda.is_available() else "cpu"
        )
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.pad_multiple = pad_multiple(self.backbone_scale)

        if is_torchscript_file(self.checkpoint):
            self.format = "torchscript"
            self.random_weights = False
            module = load_torchscript(self.checkpoint, backbone, map_location=str(self.device))
            module.backbone_scale = self.backbone_scale
            module.refine_mode = refine_mode
            module.refine_sample_pixels = self.refine_sample_pixels
            module.refine_threshold = self.refine_threshold
        else:
            self.format = "state dict"
            module, self.random_weights = load_model(
                self.checkpoint,
                backbone,
                backbone_scale=self.backbone_scale,
                refine_mode=refine_mode,
                refine_sample_pixels=self.refine_sample_pixels,
                refine_threshold=self.refine_threshold,
            )
        self.model = module.to(device=self.device, dtype=self.dtype).eval()

    @property
    def description(self) -> str:
        """One line for logs: what runs, from which file, where."""
        if self.refine_mode == "sampling":
            mode = f"sampling {self.refine_sample_pixels} px"
        elif self.refine_mode == "thresholding":
            mode = f"thresholding > {self.refine_threshold:g}"
        else:
            mode = "full"
        text = (
            f"BGMv2 MattingRefine {self.backbone} ({self.format} {self.checkpoint}), refine {mode}, "
            f"backbone_scale {self.backbone_scale:g}, {self.device} {self.precision}, batch {self.batch_size}"
        )
        return text + (", RANDOM WEIGHTS" if self.random_weights else "")

    def _to_tensor(self, frames: np.ndarray) -> Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        return x.to(self.dtype).div_(255.0)

    def __call__(self, images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images, plates: uint8 (N,H,W,3) RGB -> alpha float32 (N,H,W), foreground (N,H,W,3), in [0,1].

        A single plate, (H,W,3) or (1,H,W,3), is used for every image. Results do not depend on batch_size:
        BatchNorm runs on its stored statistics and sampling picks its patches per image.
        """
        images = _check_frames(images, "images")
        if isinstance(plates, np.ndarray) and plates.ndim == 3:
            plates = plates[None]
        plates = _check_frames(plates, "plates")
        if plates.shape[1:] != images.shape[1:] or plates.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"plates {plates.shape} do not match images {images.shape}")
        n, h, w, _ = images.shape
        alpha = np.empty((n, h, w), np.float32)
        foreground = np.empty((n, h, w, 3), np.float32)
        pad_h, pad_w = -h % self.pad_multiple, -w % self.pad_multiple
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                src = self._to_tensor(images[start:stop])
                bgr = self._to_tensor(plates[start:stop] if plates.shape[0] > 1 else plates).expand_as(src)
                if pad_h or pad_w:
                    src = F.pad(src, (0, pad_w, 0, pad_h), mode="replicate")
                    bgr = F.pad(bgr, (0, pad_w, 0, pad_h), mode="replicate")
                pha, fgr = self.model(src, bgr.contiguous())[:2]
                alpha[start:stop] = pha[:, 0, :h, :w].float().cpu().numpy()
                foreground[start:stop] = fgr[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return alpha, foreground

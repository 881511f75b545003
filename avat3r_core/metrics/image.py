"""PSNR and SSIM on image batches, usable both as training losses and as evaluation metrics.

One implementation serves both roles so that the number a run optimises (Avat3r: `0.8·L1 + 0.2·(1 - SSIM)
+ 0.01·LPIPS`) and the number the evaluation reports are the same function. The evaluation protocol of the
NeRSemble/Avat3r lineage uses torchmetrics (`PeakSignalNoiseRatio(data_range=1.0)`,
`StructuralSimilarityIndexMeasure(data_range=1.0)`), so the conventions here are torchmetrics' and the tests
check parity with it and with scikit-image.

Inputs are (B, C, H, W) batches. Both metrics run in float32 (float64 if given float64) with autocast
switched off: under bf16 autocast a convolution would otherwise run in bf16, whose 8-bit mantissa loses the
small differences `E[x²] - E[x]²` that SSIM's variance terms are made of.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "gaussian_window", "psnr", "ssim", "ssim_loss", "ssim_map"]

# torchmetrics' (and Wang et al. 2004's) defaults.
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

Reduction = Literal["none", "mean"]


def _check_pair(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(
            f"{name} expects pred and target of the same (B, C, H, W) shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"{name} expects floating-point images, got {pred.dtype} and {target.dtype}")


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64, float32 otherwise (bf16/fp16 inputs are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _reduce(values: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio per image, `10·log10(data_range² / MSE)`, shape (B,).

    The MSE is taken over all channels and pixels of each image, as torchmetrics'
    `peak_signal_noise_ratio(..., dim=(1, 2, 3), reduction="none")`. Note that torchmetrics' default
    (`dim=None`) pools the squared error of the whole batch before the log; averaging these per-image values
    is the usual protocol for novel-view benchmarks and is what callers should do.

    Identical images give `inf` (MSE 0), as in torchmetrics; no cap is applied, so a suspiciously perfect
    render shows up instead of being hidden behind a ceiling.

    Args:
        pred, target: (B, C, H, W) images on the scale given by `data_range`. Values are not clamped.
        data_range: the peak value minus the lowest value (1.0 for images in [0, 1]).
        mask: optional (B, 1, H, W) or (B, C, H, W) mask, boolean or float weights in [0, 1]. The MSE becomes
            the weighted mean of the squared error over the masked pixels (a one-channel mask applies to every
            channel), so PSNR is measured on the foreground only. An image whose mask is empty gets NaN.
    """
    _check_pair(pred, target, "psnr")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    dtype = _compute_dtype(pred, target)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        squared = (pred.to(dtype) - target.to(dtype)).square()
        if mask is None:
            mse = squared.flatten(1).mean(dim=1)
        else:
            b, c, h, w = pred.shape
            if (
                mask.ndim != 4
                or mask.shape[1] not in (1, c)
                or mask.shape[0] != b
                or mask.shape[2:] != (h, w)
            ):
                raise ValueError(
                    f"psnr mask must be (B, 1, H, W) or (B, C, H, W) = ({b}, 1|{c}, {h}, {w}), "
                    f"got {tuple(mask.shape)}"
                )
            weights = mask.to(device=pred.device, dtype=dtype).expand_as(squared)
            mse = (squared * weights).flatten(1).sum(dim=1) / weights.flatten(1).sum(dim=1)
        return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(
    sigma: float = SSIM_SIGMA, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The normalised 1-D Gaussian SSIM window, torchmetrics' size rule `2·int(3.5·sigma + 0.5) + 1`.

    That rule gives 11 taps for sigma 1.5, and it is also scikit-image's size for `gaussian_weights=True`
    (scipy's default truncation at 4 sigma is overridden there with 3.5). The 2-D window is the outer
    product of this one with itself, which is what lets `ssim_map` filter separably.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    size = 2 * int(3.5 * sigma + 0.5) + 1
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return window / window.sum()


def ssim_map(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> Tensor:
    """The per-pixel, per-channel SSIM map (B, C, H, W), torchmetrics' formulation, differentiable.

    Each channel is filtered on its own with the Gaussian window after padding the images by the window
    radius with `reflect` (mirror without repeating the edge pixel: `F.pad(mode="reflect")`), exactly as
    torchmetrics does, so the map has the input's size. Local variances are `E[x²] - E[x]²` clamped at 0
    (round-off can make them slightly negative); the covariance is not clamped. The filtering is separable
    (an 11-tap pass per axis instead of an 11x11 kernel), which changes only round-off.

    Images need at least `radius + 1` = 6 pixels per side (reflect padding cannot be wider than the image).
    """
    _check_pair(pred, target, "ssim")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    dtype = _compute_dtype(pred, target)
    window = gaussian_window(sigma, dtype=dtype, device=pred.device)
    radius = (window.numel() - 1) // 2
    c, h, w = pred.shape[1:]
    if min(h, w) <= radius:
        raise ValueError(f"ssim needs images larger than {radius} px per side (sigma {sigma}), got {h}x{w}")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x = pred.to(dtype)
        y = target.to(dtype)
        # The five local moments filtered in one grouped convolution per axis: (B, 5·C, H, W).
        stacked = torch.cat((x, y, x * x, y * y, x * y), dim=1)
        stacked = F.pad(stacked, (radius, radius, radius, radius), mode="reflect")
        groups = stacked.shape[1]
        stacked = F.conv2d(stacked, window.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
        stacked = F.conv2d(stacked, window.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
        mu_x, mu_y, xx, yy, xy = stacked.split(c, dim=1)
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        var_x = torch.clamp(xx - mu_xx, min=0.0)
        var_y = torch.clamp(yy - mu_yy, min=0.0)
        cov_xy = xy - mu_xy
        return ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))


def ssim(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    reduction: Reduction = "none",
    *,
    crop_border: bool = False,
    sigma: float = SSIM_SIGMA,
    k1: float = SSIM_K1,
    k2: float = SSIM_K2,
) -> Tensor:
    """Structural similarity per image (B,) with `reduction="none"`, or its batch mean with `"mean"`.

    Defaults are torchmetrics': Gaussian window of 11 taps with sigma 1.5, K1 0.01, K2 0.03, each channel
    on its own, the per-image value being the mean of the SSIM map over channels and pixels.

    Border handling (the one place where SSIM implementations disagree):
    - `crop_border=False` (default) matches torchmetrics >= 1.5 (1.9.0 checked): reflect-pad by the window
      radius, then average the map over the full H x W. torchmetrics PR #2721 (2024-09) removed the crop.
    - `crop_border=True` matches torchmetrics < 1.5 and scikit-image's `structural_similarity(...,
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`: the map's outer `radius` = 5 pixels
      are dropped before averaging, so the value does not depend on the padding at all. Use it to compare
      with numbers computed by older torchmetrics or by skimage (published tables often are).

    Differentiable; computed in float32 (float64 for float64 input) with autocast off.
    """
    values = ssim_map(pred, target, data_range=data_range, sigma=sigma, k1=k1, k2=k2)
    if crop_border:
        radius = (gaussian_window(sigma).numel() - 1) // 2
        if min(values.shape[-2:]) <= 2 * radius:
            raise ValueError(
                f"ssim with crop_border needs images larger than {2 * radius} px per side, "
                f"got {values.shape[-2]}x{values.shape[-1]}"
            )
        values = values[..., radius:-radius, radius:-radius]
    return _reduce(values.flatten(1).mean(dim=1), reduction)


def ssim_loss(
    pred: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    reduction: Reduction = "mean",
    *,
    crop_border: bool = False,
) -> Tensor:
    """`1 - ssim`, the SSIM term of the training loss (0 for identical images); batch mean by default."""
    return 1.0 - ssim(pred, target, data_range=data_range, reduction=reduction, crop_border=crop_border)

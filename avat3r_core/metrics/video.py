"""JOD (just-objectionable-difference) video quality of a rendered sequence against the captured one.

Avat3r reports JOD from FovVideoVDP (`pyfvvdp`, display `standard_4k`, at the capture's frame rate: 7.5 fps
for Ava-256). FovVideoVDP is licensed CC BY-NC 4.0 and only published as an sdist, so it is optional; its
MIT-licensed successor ColorVideoVDP (`cvvdp`, imported as `pycvvdp`) is the open default here. The two give
different numbers for the same pair, so every result records which metric and display produced it, and a
table must say which one it reports.

Both metrics map a perfect match to 10 JOD and lower values to more visible differences. Neither is a
dependency of this package: when the chosen one is not installed, `jod` returns a result with
`available=False`, `value=None` and the reason, never a made-up number, so an evaluation without it shows a
gap instead of a score.

Facts the wrapper relies on (cvvdp 0.5.7, pyfvvdp 1.2.2):
- Both take display-encoded (sRGB) tensors; `dim_order="FCHW"` names a colour video without a batch axis.
  pyfvvdp accepts only float32 (and uint8/uint16), so frames are converted to float32 here.
- A single frame (T = 1) is treated by both as an image (no temporal channels), whatever the frame rate.
- pyfvvdp's temporal filter has `ceil(fps / 4)` taps and needs at least two, so it cannot run videos below
  4 fps (it fails with an IndexError). The NeRSemble evaluation code silently raises the rate to 4.1 fps;
  here such a call is refused instead, so the reported frame rate is the one used.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["FVVDP_MIN_VIDEO_FPS", "JOD_MAX", "JOD_METRICS", "JODResult", "jod"]

JODMetric = Literal["cvvdp", "fvvdp"]

# metric name -> (module to import, PyPI package, licence), for the reason given when it is missing.
JOD_METRICS: dict[str, tuple[str, str, str]] = {
    "cvvdp": ("pycvvdp", "cvvdp", "MIT"),
    "fvvdp": ("pyfvvdp", "pyfvvdp", "CC BY-NC 4.0, non-commercial"),
}
JOD_MAX = 10.0  # the JOD of two identical videos, for both metrics
FVVDP_MIN_VIDEO_FPS = 4.0  # pyfvvdp needs fps > 4 for videos (two temporal filter taps)


@dataclass(frozen=True)
class JODResult:
    """One JOD measurement and what produced it.

    value: the JOD (10 = indistinguishable from the target), or None when the metric is unavailable.
    metric: "cvvdp" (ColorVideoVDP) or "fvvdp" (FovVideoVDP).
    display: the display model the metric assumed, e.g. "standard_4k".
    available: False when the metric's package could not be imported; `reason` then says why.
    """

    value: float | None
    metric: str
    display: str
    available: bool
    reason: str | None = None


def _check_inputs(pred: Tensor, target: Tensor, fps: float, metric: str) -> None:
    if metric not in JOD_METRICS:
        raise ValueError(f"jod metric must be one of {sorted(JOD_METRICS)}, got {metric!r}")
    if not (isinstance(pred, Tensor) and isinstance(target, Tensor)):
        raise TypeError(f"jod expects torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 4 or pred.shape != target.shape or pred.shape[1] != 3:
        raise ValueError(
            "jod expects pred and target frames of the same (T, 3, H, W) shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape[0] == 0 or pred.shape[2] == 0 or pred.shape[3] == 0:
        raise ValueError(f"jod got empty frames of shape {tuple(pred.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"jod expects floating-point frames in [0, 1], got {pred.dtype} and {target.dtype}")
    for name, frames in (("pred", pred), ("target", target)):
        # NaN fails both comparisons, so it is caught here too.
        inside = (frames >= 0) & (frames <= 1)
        if not bool(inside.all()):
            bad = int((~inside).sum())
            raise ValueError(
                f"jod expects {name} frames with sRGB values in [0, 1]; {bad} values are outside it (or NaN)"
            )
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"jod frames-per-second must be a finite number > 0, got {fps!r}")
    if metric == "fvvdp" and pred.shape[0] > 1 and fps <= FVVDP_MIN_VIDEO_FPS:
        raise ValueError(
            f"fvvdp (pyfvvdp) cannot evaluate videos at {fps} fps: its temporal filter needs more than "
            f"{FVVDP_MIN_VIDEO_FPS} fps; use metric='cvvdp' or evaluate frames as single images"
        )


def _import_metric(metric: str) -> tuple[Any, str | None]:
    """The metric's module, or None and the reason it cannot be imported."""
    module_name, package, licence = JOD_METRICS[metric]
    try:
        return importlib.import_module(module_name), None
    except ImportError as error:
        return None, (
            f"{metric} unavailable: cannot import {module_name} ({error}); install the PyPI package "
            f"{package} ({licence}) to compute JOD"
        )


@lru_cache(maxsize=8)
def _metric_object(metric: str, display: str, device: str) -> Any:
    """A constructed pycvvdp.cvvdp / pyfvvdp.fvvdp, reused across calls (pyfvvdp's takes ~0.2 s to build)."""
    module, reason = _import_metric(metric)
    if module is None:  # _metric_object is only called after a successful import
        raise ImportError(reason)
    try:
        if metric == "cvvdp":
            return module.cvvdp(display_name=display, heatmap=None, quiet=True, device=torch.device(device))
        return module.fvvdp(display_name=display, heatmap=None, quiet=True, device=torch.device(device))
    except Exception as error:  # both packages raise their own types for an unknown display model
        raise ValueError(f"{metric} rejected display {display!r}: {error}") from error


def jod(
    pred_frames: Tensor,
    target_frames: Tensor,
    fps: float,
    metric: JODMetric = "cvvdp",
    display: str = "standard_4k",
) -> JODResult:
    """JOD of a rendered video against the target video, with the metric and display that produced it.

    Args:
        pred_frames, target_frames: (T, 3, H, W) float tensors with sRGB values in [0, 1] (display-encoded,
            as saved to an 8-bit image). T = 1 is scored as a still image.
        fps: the frame rate of the sequence, > 0 (the capture's rate: 7.5 for Ava-256).
        metric: "cvvdp" (ColorVideoVDP, MIT) or "fvvdp" (FovVideoVDP, CC BY-NC 4.0, the paper's choice).
        display: the display model name from the package's display_models.json ("standard_4k" in the paper).

    Returns:
        JODResult; `value` is at most 10 (identical videos) and None, with `available=False` and a reason,
        when the metric's package is not installed.

    Raises:
        ValueError: mismatched or non-(T, 3, H, W) shapes, values outside [0, 1] or NaN, fps <= 0 or not
            finite, an unknown metric or display, or fvvdp on a video at <= 4 fps.
        TypeError: non-tensor or non-floating-point frames.
    """
    _check_inputs(pred_frames, target_frames, fps, metric)
    module, reason = _import_metric(metric)
    if module is None:
        return JODResult(value=None, metric=metric, display=display, available=False, reason=reason)
    device = target_frames.device
    model = _metric_object(metric, display, str(device))
    test = pred_frames.detach().to(device=device, dtype=torch.float32)
    reference = target_frames.detach().to(dtype=torch.float32)
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        value, _ = model.predict(test, reference, dim_order="FCHW", frames_per_second=float(fps))
    return JODResult(value=float(value), metric=metric, display=display, available=True, reason=None)

"""Image metrics that double as training losses and evaluation metrics (PSNR, SSIM, LPIPS), JOD, AKD, CSIM.

Training and evaluation import the same functions so that the loss a run optimises and the numbers it
reports follow one set of conventions (torchmetrics' for PSNR/SSIM, the `lpips` package's 'alex' v0.1 for
LPIPS). Nothing here downloads anything: LPIPS, AKD (FAN landmarks) and CSIM (ArcFace) take their networks
from local files.
"""

from __future__ import annotations

from avat3r_core.metrics.face import (
    FaceMetricResult,
    FaceModelError,
    IdentityModel,
    LandmarkModel,
    face_metrics,
    load_identity_model,
    load_landmark_model,
)
from avat3r_core.metrics.image import gaussian_window, psnr, ssim, ssim_loss, ssim_map
from avat3r_core.metrics.lpips import (
    ALEXNET_FILE,
    ALEXNET_URL,
    LPIPS,
    LPIPS_MIN_SIDE,
    LPIPSWeightsError,
    find_lpips_heads,
    lpips_available,
    lpips_for_loss_weight,
)
from avat3r_core.metrics.video import JODResult, jod

__all__ = [
    "ALEXNET_FILE",
    "ALEXNET_URL",
    "LPIPS",
    "LPIPS_MIN_SIDE",
    "FaceMetricResult",
    "FaceModelError",
    "IdentityModel",
    "JODResult",
    "LPIPSWeightsError",
    "LandmarkModel",
    "face_metrics",
    "find_lpips_heads",
    "gaussian_window",
    "jod",
    "load_identity_model",
    "load_landmark_model",
    "lpips_available",
    "lpips_for_loss_weight",
    "psnr",
    "ssim",
    "ssim_loss",
    "ssim_map",
]

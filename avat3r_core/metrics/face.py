"""AKD (average keypoint distance) and CSIM (identity cosine similarity), from local model files only.

Avat3r reports AKD and CSIM between each rendered view and its captured image. The reference tools
(face-alignment, insightface) download their networks on first use; here every network comes from a file
the user supplies, and a metric whose file is not configured, or whose runtime package is not installed, is
reported as unavailable with the reason, never as a number. A file that is not the expected network raises
`FaceModelError`, naming the file and what was expected.

Landmarks (AKD):
- FAN 68-point (`kind="fan68"`), the TorchScript archive that face-alignment 1.3/1.4 downloads
  (`2DFAN4_1.6-c827573f02.zip`, `2DFAN4-cd938726ad.zip`; iBUG 300-W point order). Input N x 3 x 256 x 256
  RGB in [0, 1], output N x 68 x 64 x 64 heatmaps. face-alignment >= 1.5 ships a plain state dict
  (`2DFAN4-11f355bf06.pth.tar`) instead; that file is recognised and refused with a pointer to the archive.
- PIPNet 98-point (`kind="pipnet98"`, the paper's choice through FaceBoxesV2 + PIPNet) is not supported yet;
  asking for it raises `FaceModelError`.

  There is no face detector: renderings and ground truth are head-centric crops, and a detector could pick
  different boxes on the two images of a pair (or none on a poor rendering), which would make AKD measure the
  detector. Instead each pair shares one face box (x0, y0, x1, y1) in pixels: the caller's (`boxes`), or,
  by default, the bounding box of the landmarks found on the ground truth inside a central box of half the
  image side (`DEFAULT_BOX_FRACTION`). The ground truth alone decides the box, so a prediction is never
  judged under a box it moved. From the box, the crop follows face-alignment (`api.py`,
  `get_landmarks_from_image`): centre = box centre moved up by 0.12 box heights, side = 200 * (w + h) / 195;
  the square is resampled to 256 x 256 (bilinear, zero outside the image, as its `crop` + cv2 INTER_LINEAR).
  Heatmaps are decoded as face-alignment's `get_preds_fromhm`: the arg-max pixel, moved a quarter pixel
  towards the higher of its two neighbours along each axis (not on the heatmap border), taken at the pixel
  centre, and mapped back through the crop square. Unlike face-alignment the result is not truncated to
  whole pixels, and the input is not flipped (face-alignment 1.4's default, `flip_input=False`).

  AKD is the mean Euclidean distance between the landmarks of prediction and ground truth, in pixels of the
  images passed in, or of those images resized to `akd_size` x `akd_size` when it is given (the paper
  reports AKD on 667 x 667 renderings; landmarks are found on a 256 px crop either way, so this only
  rescales the distances).

Identity (CSIM): ArcFace R50 from insightface's buffalo_l pack (`w600k_r50.onnx`), run by onnxruntime.
- Alignment (insightface `utils/face_align.py`, `norm_crop`): a least-squares similarity (Umeyama, as
  skimage's SimilarityTransform) maps five points of the face to insightface's 112 x 112 ArcFace template
  `ARCFACE_TEMPLATE` (eye centres, nose tip, mouth corners, left to right in the image), and the image is
  warped with it, bilinear with zero outside (cv2.warpAffine). With a landmark model the five points come
  from each image's own 68 landmarks (mean of points 36-41 and of 42-47, point 30, points 48 and 54) as
  insightface takes each image's own detector keypoints. Without one, the square around the face box
  (centre of the box, side its longer edge) is resized to 112 x 112: a documented fallback that is not the
  paper's protocol, recorded as `alignment="box"` in the result.
- Input (insightface `model_zoo/arcface_onnx.py`, `get_feat`): insightface reads BGR images and
  `cv2.dnn.blobFromImages(..., swapRB=True)` hands the network RGB, scaled as (x - 127.5) / 127.5 (the mean
  and scale it uses for networks exported from PyTorch, which w600k_r50 is). Here: RGB, 2 * x - 1 for x in
  [0, 1], N x 3 x 112 x 112 float32.
- CSIM is the cosine similarity of the embeddings of prediction and ground truth (`compute_sim`).

Coordinates: x right, y down, in pixels, with the centre of pixel (row i, column j) at (j, i) (the
convention of cv2, face-alignment and insightface's template). Images are (N, 3, H, W) RGB tensors in
[0, 1].
"""

from __future__ import annotations

import importlib
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from avat3r_core.errors import Avat3rError

__all__ = [
    "ARCFACE_EMBEDDING",
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "DEFAULT_BOX_FRACTION",
    "FAN_HEATMAP",
    "FAN_INPUT",
    "FAN_POINTS",
    "LANDMARK_KINDS",
    "FaceMetricResult",
    "FaceModelError",
    "IdentityModel",
    "LandmarkModel",
    "akd",
    "align_faces",
    "box_from_landmarks",
    "central_boxes",
    "csim",
    "decode_heatmaps",
    "face_metrics",
    "fan_crop_squares",
    "five_points",
    "load_identity_model",
    "load_landmark_model",
    "similarity_transform",
]

LandmarkKind = Literal["fan68", "pipnet98"]
LANDMARK_KINDS: tuple[str, ...] = ("fan68", "pipnet98")

FAN_INPUT = 256  # face-alignment CROP_RESOLUTION
FAN_HEATMAP = 64  # HEATMAP_RESOLUTION
FAN_POINTS = 68  # NUM_LANDMARKS
_FAN_REFERENCE_SCALE = 195.0  # the detectors' reference_scale
_FAN_SCALE_FACTOR = 200.0  # SCALE_FACTOR: the crop side is 200 * scale
_FAN_CENTER_Y_OFFSET = 0.12  # CENTER_Y_OFFSET: the crop centre sits 0.12 box heights above the box centre
FAN_ARCHIVE = "2DFAN4_1.6-c827573f02.zip"
FAN_URL = f"https://www.adrianbulat.com/downloads/python-fan/{FAN_ARCHIVE}"

ARCFACE_SIZE = 112
ARCFACE_EMBEDDING = 512
ARCFACE_FILE = "w600k_r50.onnx"
# insightface utils/face_align.py `arcface_dst`: left eye, right eye, nose tip, left and right mouth corner
# (left/right as seen in the image), in pixels of the 112 x 112 input.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# iBUG 68-point indices of the five points (0-based): the two eyes' six points, nose tip, mouth corners.
_EYE_LEFT = slice(36, 42)
_EYE_RIGHT = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54

# Without boxes: the first landmark pass uses a central square box of this fraction of the shorter side.
# face-alignment's crop is ~2.05 box sides, so this crop spans about the whole image.
DEFAULT_BOX_FRACTION = 0.5


class FaceModelError(Avat3rError):
    """A landmark or identity model file is missing, unreadable or not the expected network; names the
    file and what was expected."""

    def __init__(self, source: str | Path, role: str, message: str) -> None:
        self.source = source
        self.role = role
        super().__init__(f"{role} model {source}: {message}")


@dataclass(frozen=True)
class FaceMetricResult:
    """One AKD or CSIM measurement and what produced it.

    value: the mean over the images (AKD in pixels, lower is better; CSIM in [-1, 1], 1 = same identity),
        or None when the metric is unavailable.
    metric: "akd" or "csim".
    model: the network that produced it, e.g. "fan68 (2DFAN4_1.6-c827573f02.zip)"; "" when unavailable
        for lack of a file.
    available: False when no model file is configured or its runtime package is missing; `reason` says which.
    reason: why the metric is unavailable, else None.
    per_image: the value of each image pair, in input order (empty when unavailable).
    image_size: AKD: the (height, width) in pixels the distances are measured at; CSIM: None.
    alignment: CSIM: "landmarks" (5 points from the 68 landmarks) or "box" (the central-crop fallback);
        AKD: None.
    """

    value: float | None
    metric: str
    model: str
    available: bool
    reason: str | None = None
    per_image: tuple[float, ...] = field(default=())
    image_size: tuple[int, int] | None = None
    alignment: str | None = None


def _unavailable(metric: str, model: str, reason: str) -> FaceMetricResult:
    return FaceMetricResult(value=None, metric=metric, model=model, available=False, reason=reason)


# -- geometry -----------------------------------------------------------------------------------------------


def _sample(images: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples of (N, C, H, W) images at pixel coordinates (N, h, w, 2), zero outside the image."""
    height, width = images.shape[-2:]
    scale = coords.new_tensor([2.0 / width, 2.0 / height])
    grid = (coords + 0.5) * scale - 1.0  # pixel centres at integers -> align_corners=False normalisation
    return F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _warp(images: Tensor, inverse: Tensor, size: int) -> Tensor:
    """cv2.warpAffine: output pixel (u, v) takes the input at `inverse @ (u, v, 1)`; inverse (N, 2, 3)."""
    axis = torch.arange(size, dtype=torch.float64, device=images.device)
    v, u = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (size, size, 3)
    coords = torch.einsum("nij,hwj->nhwi", inverse.to(device=images.device, dtype=torch.float64), points)
    return _sample(images, coords)


def fan_crop_squares(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """face-alignment's crop square for face boxes (N, 4) = (x0, y0, x1, y1): its centre (N, 2) and side (N,).

    centre = box centre moved up by 0.12 box heights; side = 200 * (width + height) / 195.
    """
    boxes = boxes.to(torch.float64)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    center = torch.stack(
        [
            0.5 * (boxes[:, 0] + boxes[:, 2]),
            0.5 * (boxes[:, 1] + boxes[:, 3]) - _FAN_CENTER_Y_OFFSET * height,
        ],
        dim=-1,
    )
    side = _FAN_SCALE_FACTOR * (width + height) / _FAN_REFERENCE_SCALE
    return center, side


def decode_heatmaps(heatmaps: Tensor) -> Tensor:
    """Points (N, K, 2) in heatmap pixels from heatmaps (N, K, h, w), as face-alignment's get_preds_fromhm.

    The arg-max pixel (x, y) gives (x + 0.5, y + 0.5) (its centre, in units where the heatmap spans [0, w]),
    moved by 0.25 towards the higher neighbour along each axis when the pixel is not on the border.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).float()
    index = flat.argmax(dim=-1)
    x, y = index % w, torch.div(index, w, rounding_mode="floor")
    inside = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    xm, xp = (x - 1).clamp(0, w - 1), (x + 1).clamp(0, w - 1)
    ym, yp = (y - 1).clamp(0, h - 1), (y + 1).clamp(0, h - 1)

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return flat.gather(-1, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

    dx = torch.sign(at(y, xp) - at(y, xm)) * inside
    dy = torch.sign(at(yp, x) - at(ym, x)) * inside
    return torch.stack([x + 0.5 + 0.25 * dx, y + 0.5 + 0.25 * dy], dim=-1).to(torch.float64)


def central_boxes(n: int, height: int, width: int, fraction: float = DEFAULT_BOX_FRACTION) -> Tensor:
    """N copies of the central square box (x0, y0, x1, y1) whose side is `fraction` of the shorter side."""
    side = fraction * min(height, width)
    cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
    box = torch.tensor([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dtype=torch.float64)
    return box.expand(n, 4).clone()


def box_from_landmarks(landmarks: Tensor) -> Tensor:
    """The bounding boxes (N, 4) of landmarks (N, K, 2), as face-alignment's create_bounding_box."""
    return torch.cat([landmarks.amin(dim=1), landmarks.amax(dim=1)], dim=-1)


def five_points(landmarks: Tensor) -> Tensor:
    """ArcFace's five points (N, 5, 2) from iBUG 68-point landmarks (N, 68, 2): the eye centres (mean of
    each eye's six points), the nose tip (30) and the mouth corners (48, 54), in the template's order."""
    if landmarks.shape[-2:] != (FAN_POINTS, 2):
        raise ValueError(f"five_points expects (N, 68, 2) landmarks, got {tuple(landmarks.shape)}")
    return torch.stack(
        [
            landmarks[:, _EYE_LEFT].mean(dim=1),
            landmarks[:, _EYE_RIGHT].mean(dim=1),
            landmarks[:, _NOSE_TIP],
            landmarks[:, _MOUTH_LEFT],
            landmarks[:, _MOUTH_RIGHT],
        ],
        dim=1,
    )


def similarity_transform(src: Tensor, dst: Tensor) -> Tensor:
    """The least-squares similarity (rotation, uniform scale, translation; no reflection) mapping points
    src (N, P, 2) onto dst (N, P, 2) or (P, 2), as (N, 2, 3) matrices: Umeyama (1991), the estimate of
    skimage's SimilarityTransform that insightface's estimate_norm uses."""
    src = src.to(torch.float64)
    dst = dst.to(device=src.device, dtype=torch.float64).expand_as(src)
    mean_src, mean_dst = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    a, b = src - mean_src, dst - mean_dst
    covariance = b.transpose(1, 2) @ a / src.shape[1]  # (N, 2, 2)
    u, s, vh = torch.linalg.svd(covariance)
    sign = torch.ones_like(s)
    sign[:, -1] = torch.where(torch.linalg.det(covariance) < 0, -1.0, 1.0)
    rotation = u @ torch.diag_embed(sign) @ vh
    variance = a.pow(2).sum(dim=-1).mean(dim=1)  # (N,)
    scale = (s * sign).sum(dim=-1) / variance
    translation = mean_dst.squeeze(1) - scale[:, None] * (rotation @ mean_src.transpose(1, 2)).squeeze(-1)
    return torch.cat([scale[:, None, None] * rotation, translation[:, :, None]], dim=-1)


def _invert_affine(matrix: Tensor) -> Tensor:
    full = torch.cat([matrix, matrix.new_tensor([0.0, 0.0, 1.0]).expand(matrix.shape[0], 1, 3)], dim=1)
    return torch.linalg.inv(full)[:, :2]


def align_faces(images: Tensor, points: Tensor | None = None, boxes: Tensor | None = None) -> Tensor:
    """ArcFace inputs (N, 3, 112, 112) in [0, 1]: each image warped so that its five points (N, 5, 2) land on
    ARCFACE_TEMPLATE (insightface's norm_crop); without points, the square around each box (N, 4) (centre of
    the box, side its longer edge) resized to 112 x 112."""
    n = images.shape[0]
    if points is not None:
        forward = similarity_transform(points, torch.from_numpy(ARCFACE_TEMPLATE))
    else:
        if boxes is None:
            raise ValueError("align_faces needs five points or face boxes")
        boxes = boxes.to(torch.float64).cpu()
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        scale = ARCFACE_SIZE / side
        center = 0.5 * (boxes[:, :2] + boxes[:, 2:])
        half = 0.5 * (ARCFACE_SIZE - 1)
        forward = torch.zeros(n, 2, 3, dtype=torch.float64)
        forward[:, 0, 0] = forward[:, 1, 1] = scale
        forward[:, :, 2] = half - scale[:, None] * center
    return _warp(images, _invert_affine(forward.cpu()), ARCFACE_SIZE)


# -- landmark models ----------------------------------------------------------------------------------------


def _check_file(path: Path, role: str, expected: str) -> None:
    if not path.exists():
        raise FaceModelError(path, role, f"file does not exist; expected {expected}")
    if not path.is_file():
        raise FaceModelError(path, role, f"is not a file; expected {expected}")


_FAN_EXPECTED = (
    f"face-alignment's FAN 68-point TorchScript archive ({FAN_ARCHIVE}, from {FAN_URL}; input N x 3 x 256 x "
    "256, output N x 68 x 64 x 64 heatmaps)"
)


class LandmarkModel:
    """A 2-D facial landmark network loaded from a local file (see load_landmark_model)."""

    def __init__(self, module: Any, path: Path, kind: str) -> None:
        self.module = module
        self.path = path
        self.kind = kind
        self.num_points = FAN_POINTS
        self._device: torch.device | None = None

    @property
    def name(self) -> str:
        return f"{self.kind} ({self.path.name})"

    def _on(self, device: torch.device) -> Any:
        if self._device != device:
            self.module = self.module.to(device)
            self._device = device
        return self.module

    def heatmaps(self, crops: Tensor) -> Tensor:
        """The network's heatmaps (N, 68, 64, 64) for crops (N, 3, 256, 256) in [0, 1]."""
        module = self._on(crops.device)
        with torch.no_grad():
            out = module(crops.float())
        if isinstance(out, list | tuple):  # face-alignment keeps the last stack's output
            out = out[-1]
        return out

    def predict(self, images: Tensor, boxes: Tensor) -> Tensor:
        """Landmarks (N, 68, 2) in pixels of images (N, 3, H, W) in [0, 1], each found in the crop square
        of its face box (N, 4) = (x0, y0, x1, y1)."""
        center, side = fan_crop_squares(boxes.cpu())
        # Crop pixel (u, v) has its centre at corner + (u + 0.5) * side / 256 in the image.
        corner = center - 0.5 * side[:, None]
        axis = (torch.arange(FAN_INPUT, dtype=torch.float64) + 0.5) / FAN_INPUT
        v, u = torch.meshgrid(axis, axis, indexing="ij")
        coords = corner[:, None, None, :] + side[:, None, None, None] * torch.stack([u, v], dim=-1)
        crops = _sample(images.float(), coords.to(images.device))
        heatmaps = self.heatmaps(crops).detach().float().cpu()
        points = decode_heatmaps(heatmaps)  # heatmap pixels
        return corner[:, None, :] + points * (side[:, None, None] / heatmaps.shape[-1])


def _probe_fan(module: Any, path: Path) -> None:
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, FAN_INPUT, FAN_INPUT))
    except Exception as error:
        raise FaceModelError(
            path, "landmark", f"fails on a 1 x 3 x 256 x 256 input ({error}); expected {_FAN_EXPECTED}"
        ) from error
    if isinstance(out, list | tuple) and out:
        out = out[-1]
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if shape != (1, FAN_POINTS, FAN_HEATMAP, FAN_HEATMAP):
        raise FaceModelError(
            path, "landmark", f"returns {shape} for a 1 x 3 x 256 x 256 input; expected {_FAN_EXPECTED}"
        )


def _load_fan(path: Path) -> LandmarkModel:
    _check_file(path, "landmark", _FAN_EXPECTED)
    if not zipfile.is_zipfile(path):
        raise FaceModelError(
            path, "landmark", f"is not a TorchScript archive (not a zip); expected {_FAN_EXPECTED}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still the file's format
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("data.pkl") for name in names) and not any(
            name.endswith("constants.pkl") for name in names
        ):
            detail = "a PyTorch state dict or checkpoint (face-alignment >= 1.5's .pth.tar), not TorchScript"
        else:
            detail = f"unreadable as TorchScript ({str(error).splitlines()[0]})"
        raise FaceModelError(path, "landmark", f"{detail}; expected {_FAN_EXPECTED}") from error
    module.eval()
    _probe_fan(module, path)
    return LandmarkModel(module, path, "fan68")


def load_landmark_model(path: str | Path, kind: LandmarkKind = "fan68") -> LandmarkModel:
    """A landmark network from a local file; nothing is downloaded.

    kind: "fan68" (face-alignment's 2DFAN4 TorchScript archive, 68 iBUG points). "pipnet98" is not
    supported yet.

    Raises:
        FaceModelError: the file is missing, unreadable, or not the expected network (its output on a
            256 x 256 input is not 68 heatmaps of 64 x 64); "pipnet98".
        ValueError: an unknown kind.
    """
    path = Path(path)
    if kind == "fan68":
        return _load_fan(path)
    if kind == "pipnet98":
        raise FaceModelError(
            path,
            "landmark",
            "PIPNet 98-point (WFLW) landmarks are not supported yet; use kind='fan68' with "
            f"face-alignment's {FAN_ARCHIVE}",
        )
    raise ValueError(f"landmark model kind must be one of {list(LANDMARK_KINDS)}, got {kind!r}")


# -- identity model -----------------------------------------------------------------------------------------

_ARCFACE_EXPECTED = (
    f"insightface's ArcFace recognition network ({ARCFACE_FILE} from the buffalo_l pack; ONNX with one input "
    f"N x 3 x 112 x 112 and one output N x {ARCFACE_EMBEDDING})"
)


def _import_onnxruntime() -> tuple[Any, str | None]:
    """onnxruntime, or None and the reason it cannot be imported."""
    try:
        return importlib.import_module("onnxruntime"), None
    except ImportError as error:
        return None, (
            f"cannot import onnxruntime ({error}); install the PyPI package onnxruntime "
            '(`pip install -e ".[face-metrics]"`) to compute CSIM'
        )


class IdentityModel:
    """ArcFace run by an onnxruntime session (see load_identity_model)."""

    def __init__(self, session: Any, path: Path) -> None:
        self.session = session
        self.path = path
        self.input_name = session.get_inputs()[0].name
        self.batch = session.get_inputs()[0].shape[0]  # an int when the file fixes the batch size

    @property
    def name(self) -> str:
        return f"arcface ({self.path.name})"

    def embed(self, aligned: Tensor) -> Tensor:
        """Embeddings (N, 512) of aligned faces (N, 3, 112, 112), RGB in [0, 1]."""
        blob = (aligned.detach().float().cpu() * 2.0 - 1.0).numpy()  # (255 x - 127.5) / 127.5
        chunks = [blob[i : i + 1] for i in range(len(blob))] if isinstance(self.batch, int) else [blob]
        out = [self.session.run(None, {self.input_name: np.ascontiguousarray(c)})[0] for c in chunks]
        return torch.from_numpy(np.concatenate(out, axis=0).astype(np.float64))


def load_identity_model(path: str | Path, providers: list[str] | None = None) -> IdentityModel:
    """ArcFace (insightface buffalo_l `w600k_r50.onnx`) from a local file, run by onnxruntime.

    providers: onnxruntime execution providers (default: CPUExecutionProvider).

    Raises:
        ImportError: onnxruntime is not installed (face_metrics reports CSIM unavailable instead).
        FaceModelError: the file is missing, not a readable ONNX model, or its input is not N x 3 x 112 x 112
            or its output not N x 512.
    """
    path = Path(path)
    ort, reason = _import_onnxruntime()
    if ort is None:
        raise ImportError(reason)
    _check_file(path, "identity", _ARCFACE_EXPECTED)
    try:
        session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    except Exception as error:
        raise FaceModelError(
            path,
            "identity",
            f"is not a readable ONNX model ({str(error).splitlines()[0]}); expected {_ARCFACE_EXPECTED}",
        ) from error
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found = f"inputs {[list(i.shape) for i in inputs]}, outputs {[list(o.shape) for o in outputs]}"
    shape_in = list(inputs[0].shape) if len(inputs) == 1 else []
    shape_out = list(outputs[0].shape) if len(outputs) == 1 else []
    ok = (
        len(shape_in) == 4
        and (shape_in[0] == 1 or not isinstance(shape_in[0], int))  # a batch of 1 or a free batch size
        and shape_in[1:] == [3, ARCFACE_SIZE, ARCFACE_SIZE]
        and len(shape_out) == 2
        and shape_out[1] == ARCFACE_EMBEDDING
    )
    if not ok:
        raise FaceModelError(path, "identity", f"has {found}; expected {_ARCFACE_EXPECTED}")
    return IdentityModel(session, path)


# -- the metrics --------------------------------------------------------------------------------------------


def _check_images(pred: Tensor, target: Tensor) -> None:
    if not (isinstance(pred, Tensor) and isinstance(target, Tensor)):
        raise TypeError(
            f"face metrics expect torch tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    if pred.ndim != 4 or pred.shape != target.shape or pred.shape[1] != 3:
        raise ValueError(
            "face metrics expect pred and target images of the same (N, 3, H, W) shape, got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if min(pred.shape[0], pred.shape[2], pred.shape[3]) == 0:
        raise ValueError(f"face metrics got empty images of shape {tuple(pred.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(
            f"face metrics expect floating-point images in [0, 1], got {pred.dtype}, {target.dtype}"
        )
    for name, images in (("pred", pred), ("target", target)):
        inside = (images >= 0) & (images <= 1)
        if not bool(inside.all()):
            raise ValueError(
                f"face metrics expect {name} images in [0, 1]; {int((~inside).sum())} values are outside "
                "it (or NaN)"
            )


def _check_boxes(boxes: Tensor | Any, n: int) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
    if boxes.shape != (n, 4):
        raise ValueError(
            f"face boxes must be ({n}, 4) = (x0, y0, x1, y1) per image, got {tuple(boxes.shape)}"
        )
    if not bool(torch.isfinite(boxes).all()) or not bool(
        ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    ):
        raise ValueError("face boxes must be finite with x1 > x0 and y1 > y0")
    return boxes


def akd(
    pred_landmarks: Tensor, target_landmarks: Tensor, image_size: tuple[int, int], akd_size: int | None = None
) -> tuple[float, tuple[float, ...]]:
    """Mean Euclidean landmark distance (and one per image) between landmarks (N, K, 2) found in images of
    (height, width) `image_size`, in pixels of those images or of them resized to akd_size x akd_size."""
    scale = torch.ones(2, dtype=torch.float64)
    if akd_size is not None:
        height, width = image_size
        scale = torch.tensor([akd_size / width, akd_size / height], dtype=torch.float64)
    distances = ((pred_landmarks.double() - target_landmarks.double()) * scale).norm(dim=-1)  # (N, K)
    per_image = distances.mean(dim=-1)
    return float(distances.mean()), tuple(float(v) for v in per_image)


def csim(pred_embeddings: Tensor, target_embeddings: Tensor) -> tuple[float, tuple[float, ...]]:
    """Mean cosine similarity (and one per image) of embeddings (N, D), insightface's compute_sim."""
    a, b = pred_embeddings.double(), target_embeddings.double()
    per_image = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return float(per_image.mean()), tuple(float(v) for v in per_image)


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=4)
def _cached_landmark_model(key: tuple[str, int, int], kind: str) -> LandmarkModel:
    return load_landmark_model(key[0], kind)  # type: ignore[arg-type]


@lru_cache(maxsize=4)
def _cached_identity_model(key: tuple[str, int, int]) -> IdentityModel:
    return load_identity_model(key[0])


def _landmark_model(model: LandmarkModel | str | os.PathLike | None, kind: str) -> LandmarkModel | None:
    if model is None or isinstance(model, LandmarkModel):
        return model
    path = Path(model)
    if not path.is_file():
        return load_landmark_model(path, kind)  # type: ignore[arg-type]  # raises, naming the file
    return _cached_landmark_model(_file_key(path), kind)


def face_metrics(
    pred: Tensor,
    target: Tensor,
    *,
    landmark_model: LandmarkModel | str | os.PathLike | None = None,
    identity_model: IdentityModel | str | os.PathLike | None = None,
    boxes: Tensor | None = None,
    landmark_kind: LandmarkKind = "fan68",
    akd_size: int | None = None,
) -> dict[str, FaceMetricResult]:
    """AKD and CSIM of rendered images against the captured ones.

    Args:
        pred, target: (N, 3, H, W) RGB float tensors in [0, 1] (renderings and ground truth of the same
            views; head-centric crops).
        landmark_model: a LandmarkModel or the path of its file (loaded once per file and kept), or None:
            AKD is then unavailable and CSIM aligns by the face box.
        identity_model: an IdentityModel or the path of w600k_r50.onnx, or None: CSIM is unavailable.
        boxes: face boxes (N, 4) = (x0, y0, x1, y1) in pixels, one per pair, used for both images. None:
            the bounding box of the ground truth's landmarks found inside `central_boxes` (with a landmark
            model), else the central boxes themselves.
        landmark_kind: the kind of a landmark model given as a path ("fan68").
        akd_size: report AKD in pixels of the images resized to akd_size x akd_size (667 for the paper's
            numbers); None: in pixels of the images as given.

    Returns:
        {"akd": FaceMetricResult, "csim": FaceMetricResult}; a metric without its model file, or CSIM
        without onnxruntime, has available=False, value=None and the reason.

    Raises:
        FaceModelError: a model file is missing, unreadable or of the wrong network.
        ValueError, TypeError: images not (N, 3, H, W) floats in [0, 1] of one shape, malformed boxes, or
            akd_size not a positive integer.
    """
    _check_images(pred, target)
    if akd_size is not None and (
        isinstance(akd_size, bool) or not isinstance(akd_size, int) or akd_size <= 0
    ):
        raise ValueError(f"akd_size must be a positive integer or None, got {akd_size!r}")
    n, _, height, width = pred.shape
    given = _check_boxes(boxes, n) if boxes is not None else None
    landmarks = _landmark_model(landmark_model, landmark_kind)

    identity: IdentityModel | None = None
    identity_reason = None
    if identity_model is None:
        identity_reason = "no identity model configured (ArcFace w600k_r50.onnx from insightface buffalo_l)"
    elif isinstance(identity_model, IdentityModel):
        identity = identity_model
    else:
        ort, identity_reason = _import_onnxruntime()
        if ort is not None:
            path = Path(identity_model)
            identity = (
                _cached_identity_model(_file_key(path)) if path.is_file() else load_identity_model(path)
            )

    results: dict[str, FaceMetricResult] = {}
    pred_points = target_points = None
    face_boxes = given
    if landmarks is None:
        results["akd"] = _unavailable(
            "akd", "", f"no landmark model configured (face-alignment's {FAN_ARCHIVE}, kind fan68)"
        )
        if face_boxes is None:
            face_boxes = central_boxes(n, height, width)
    else:
        if face_boxes is None:
            first = landmarks.predict(target, central_boxes(n, height, width))
            face_boxes = box_from_landmarks(first)
        target_points = landmarks.predict(target, face_boxes)
        pred_points = landmarks.predict(pred, face_boxes)
        size = (height, width) if akd_size is None else (akd_size, akd_size)
        value, per_image = akd(pred_points, target_points, (height, width), akd_size)
        results["akd"] = FaceMetricResult(
            value=value,
            metric="akd",
            model=landmarks.name,
            available=True,
            per_image=per_image,
            image_size=size,
        )

    if identity is None:
        results["csim"] = _unavailable(
            "csim", "" if identity_model is None else str(identity_model), identity_reason
        )
    else:
        if pred_points is not None and target_points is not None:
            alignment = "landmarks"
            aligned_pred = align_faces(pred.float(), five_points(pred_points))
            aligned_target = align_faces(target.float(), five_points(target_points))
        else:
            alignment = "box"
            aligned_pred = align_faces(pred.float(), boxes=face_boxes)
            aligned_target = align_faces(target.float(), boxes=face_boxes)
        value, per_image = csim(identity.embed(aligned_pred), identity.embed(aligned_target))
        results["csim"] = FaceMetricResult(
            value=value,
            metric="csim",
            model=identity.name,
            available=True,
            per_image=per_image,
            alignment=alignment,
        )
    return results

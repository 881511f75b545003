"""LPIPS (Zhang et al., CVPR 2018) with AlexNet and the v0.1 linear heads, loaded from local files only.

Evaluation in the NeRSemble/Avat3r lineage reports `LearnedPerceptualImagePatchSimilarity(net_type="alex",
normalize=True)`, i.e. the `lpips` package's 'alex' v0.1 metric. Both the `lpips` package and torchmetrics
download the AlexNet backbone through torchvision on first use, which fails on machines without internet
access, and a metric that silently changes when a download fails is worse than none. Here both parts come
from files the user supplies, loaded strictly:

- the backbone: torchvision's ImageNet AlexNet state dict, the file torchvision itself downloads
  (`alexnet-owt-7be5be79.pth`, keys `features.*` and `classifier.*`). Only `features` up to the last ReLU is
  used; the classifier keys are still required, so a truncated or foreign file is caught.
- the linear heads: the `lpips` package's `weights/v0.1/alex.pth` (keys `lin0.model.1.weight` ...
  `lin4.model.1.weight`). These 5 KB ship inside the `lpips` wheel (and, identical, inside torchmetrics), so
  they are found there when no path is given.

The forward pass is the `lpips` package's: inputs in [0, 1] are mapped to [-1, 1], shifted and scaled by
its ScalingLayer, the outputs of AlexNet's five ReLUs are unit-normalised along channels, the squared
differences are weighted by the 1x1 heads, averaged over space and summed over the five layers.
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from avat3r_core.errors import Avat3rError
from avat3r_core.models.keys import key_mismatch, name_keys

__all__ = [
    "ALEXNET_FILE",
    "ALEXNET_URL",
    "LPIPS",
    "LPIPS_MIN_SIDE",
    "LPIPSWeightsError",
    "find_lpips_heads",
    "lpips_available",
    "lpips_for_loss_weight",
]

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"  # AlexNet_Weights.IMAGENET1K_V1
HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth"
# Where installed packages keep the v0.1 AlexNet heads, in the order they are searched.
HEADS_IN_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lpips", ("weights", "v0.1", "alex.pth")),
    ("torchmetrics", ("functional", "image", "lpips_models", "alex.pth")),
)

# Indices in torchvision's `alexnet().features` of the five ReLUs LPIPS reads, and their widths.
_TAPS = (1, 4, 7, 9, 11)
_CHANNELS = (64, 192, 384, 256, 256)
# The lpips package's ScalingLayer: it maps [-1, 1] input to roughly ImageNet-normalised values.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10  # lpips.normalize_tensor
# The smallest side AlexNet's features accept: conv1 (k11, s4, p2) and two 3x3/2 max-pools must leave >= 1 px.
LPIPS_MIN_SIDE = 31


class LPIPSWeightsError(Avat3rError):
    """An LPIPS weight file is missing, unreadable or not of the expected layout; names the file."""

    def __init__(self, source: str | Path, message: str) -> None:
        self.source = source
        super().__init__(f"LPIPS weights {source}: {message}")


def _alexnet_hint() -> str:
    hint = (
        f"LPIPS needs torchvision's ImageNet AlexNet state dict, the file {ALEXNET_FILE} that torchvision "
        f"publishes at {ALEXNET_URL} (torchvision.models.AlexNet_Weights.IMAGENET1K_V1). Nothing is "
        "downloaded here: fetch it where there is internet access and pass its path"
    )
    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if cached.is_file():
        hint += f" (torchvision's cache holds a copy: {cached})"
    return hint


def find_lpips_heads() -> Path | None:
    """The v0.1 AlexNet head file inside an installed `lpips` (or torchmetrics) package, or None.

    `importlib.util.find_spec` locates a top-level package without importing it, so looking costs nothing
    even for torchmetrics, whose import is slow.
    """
    for package, parts in HEADS_IN_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location).joinpath(*parts)
            if candidate.is_file():
                return candidate
    return None


def _resolve_heads(head_weights: str | Path | None) -> Path:
    if head_weights is not None:
        return Path(head_weights)
    found = find_lpips_heads()
    if found is None:
        raise LPIPSWeightsError(
            "v0.1/alex.pth",
            "no head file given and none found in an installed `lpips` (lpips/weights/v0.1/alex.pth) or "
            f"torchmetrics package; install lpips==0.1.4 or pass the file ({HEADS_URL})",
        )
    return found


def _read_state(path: Path, what: str) -> Mapping[str, Tensor]:
    """A state dict read with the weights-only unpickler (no code from the file runs).

    Zip-format files are memory-mapped, so the 230 MB AlexNet file costs only the 9 MB of `features` that
    are copied out of it; legacy-format files (the lpips heads are one) cannot be mapped and are read whole.
    """
    if not path.is_file():
        raise LPIPSWeightsError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... depending on how it is broken
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LPIPSWeightsError(
            path, f"cannot be read as a weights-only PyTorch state dict ({what}): {first_line}"
        ) from exc
    if not isinstance(state, Mapping):
        raise LPIPSWeightsError(path, f"holds a {type(state).__name__}, not a state dict ({what})")
    return state


def _check_state(state: Mapping[str, Any], expected: Mapping[str, torch.Size], source: str | Path) -> None:
    """Strict key and shape check, with a message that names the offending keys and the file."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    parts = key_mismatch(missing, unexpected)
    not_tensors = [key for key in expected if key in state and not isinstance(state[key], Tensor)]
    if not_tensors:
        parts.append(f"{len(not_tensors)} values that are not tensors: {name_keys(not_tensors)}")
    wrong = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(shape)})"
        for key, shape in expected.items()
        if key in state and isinstance(state[key], Tensor) and state[key].shape != shape
    ]
    if wrong:
        parts.append(f"{len(wrong)} keys of the wrong shape: {name_keys(wrong)}")
    if parts:
        raise LPIPSWeightsError(source, "; ".join(parts))


def _head_key(layer: int) -> str:
    return f"lin{layer}.model.1.weight"  # lpips' NetLinLayer: Sequential(Dropout, Conv2d 1x1)


class LPIPS(nn.Module):
    """LPIPS distance, AlexNet backbone with the v0.1 linear heads; `forward(pred, target)` -> (B,).

    Frozen (no parameter requires grad) and always in eval mode (`train()` does not switch it; nothing in it
    behaves differently anyway), but differentiable with respect to its inputs, so it serves as a loss.
    Its parameters are float32 and the forward pass runs in their dtype with autocast off, since the unit
    normalisation divides by norms that bf16 resolves poorly.

    Keep it outside a model whose state dict is checkpointed (or hold it in a plain attribute): its weights
    come from the files, not from training.
    """

    def __init__(
        self,
        alexnet_state: Mapping[str, Tensor],
        head_state: Mapping[str, Tensor],
        *,
        alexnet_source: str | Path = "AlexNet state dict",
        head_source: str | Path = "LPIPS head state dict",
    ) -> None:
        """Build from a torchvision AlexNet state dict and a v0.1 head state dict, both checked strictly.

        Most callers want `from_files`; this entry point serves tests and weights already in memory. The
        sources only name the origin in error messages.
        """
        super().__init__()
        with torch.device("meta"):
            reference = torchvision.models.alexnet()
            features = reference.features[: _TAPS[-1] + 1]
            heads = nn.ModuleList(nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in _CHANNELS)
        _check_state(alexnet_state, {k: v.shape for k, v in reference.state_dict().items()}, alexnet_source)
        expected_heads = {_head_key(i): heads[i].weight.shape for i in range(len(_CHANNELS))}
        _check_state(head_state, expected_heads, head_source)

        def owned(tensor: Tensor) -> Tensor:  # a float32 copy, detached from a memory-mapped file
            return tensor.detach().to(torch.float32, copy=True).contiguous()

        features.load_state_dict(
            {
                key.removeprefix("features."): owned(value)
                for key, value in alexnet_state.items()
                if key.startswith("features.")
            },
            strict=True,
            assign=True,
        )
        heads.load_state_dict(
            {f"{i}.weight": owned(head_state[_head_key(i)]) for i in range(len(_CHANNELS))},
            strict=True,
            assign=True,
        )
        self.features = features
        self.heads = heads
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_files(cls, alexnet_weights: str | Path | None, head_weights: str | Path | None = None) -> LPIPS:
        """Load torchvision's `alexnet-owt-7be5be79.pth` and the v0.1 `alex.pth` heads; never downloads.

        `head_weights=None` takes the heads from an installed `lpips` (or torchmetrics) package. A missing
        file, a file that is not a weights-only state dict, or one with missing, unexpected or misshapen
        keys raises `LPIPSWeightsError` naming the file (and the keys); a missing AlexNet file also names
        the file torchvision publishes and its URL.
        """
        if alexnet_weights is None:
            raise LPIPSWeightsError("(AlexNet backbone)", f"no file given. {_alexnet_hint()}")
        alexnet_path = Path(alexnet_weights)
        if not alexnet_path.exists():
            raise LPIPSWeightsError(alexnet_path, f"file not found. {_alexnet_hint()}")
        head_path = _resolve_heads(head_weights)
        return cls(
            _read_state(alexnet_path, "torchvision AlexNet"),
            _read_state(head_path, "LPIPS v0.1 heads"),
            alexnet_source=alexnet_path,
            head_source=head_path,
        )

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: LPIPS is a fixed metric, not a trainable part of the model."""
        return super().train(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """LPIPS per image, shape (B,), for (B, 3, H, W) images in [0, 1] (values are not clamped).

        Sides must be at least `LPIPS_MIN_SIDE` (31) pixels. Both images go through the backbone as one
        batch of 2B.
        """
        if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(
                f"LPIPS expects pred and target of the same (B, 3, H, W) shape, got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        if min(pred.shape[-2:]) < LPIPS_MIN_SIDE:
            raise ValueError(
                f"LPIPS needs images of at least {LPIPS_MIN_SIDE} px per side, got "
                f"{pred.shape[-2]}x{pred.shape[-1]}"
            )
        dtype = self.shift.dtype
        with torch.autocast(device_type=pred.device.type, enabled=False):
            x = torch.cat((pred, target)).to(dtype)
            x = (2 * x - 1 - self.shift) / self.scale  # [0, 1] -> [-1, 1] -> lpips' ScalingLayer
            total = x.new_zeros(pred.shape[0])
            heads = iter(self.heads)
            for index, layer in enumerate(self.features):
                x = layer(x)
                if index in _TAPS:
                    unit = x / (x.square().sum(dim=1, keepdim=True).sqrt() + _EPS)
                    first, second = unit.chunk(2)
                    total = total + next(heads)((first - second).square()).mean(dim=(1, 2, 3))
            return total


def lpips_available(alexnet_weights: str | Path | None, head_weights: str | Path | None = None) -> bool:
    """Whether both LPIPS files can be found (existence only; `LPIPS.from_files` validates the contents)."""
    if alexnet_weights is None or not Path(alexnet_weights).is_file():
        return False
    if head_weights is not None:
        return Path(head_weights).is_file()
    return find_lpips_heads() is not None


def lpips_for_loss_weight(
    weight: float, alexnet_weights: str | Path | None, head_weights: str | Path | None = None
) -> LPIPS | None:
    """The LPIPS module a training loss with this weight needs, or None when the weight is 0.

    A weight of 0 switches the term off without touching any file (the default while the real AlexNet
    weights are absent); a non-zero weight needs the weights and fails with `LPIPSWeightsError` saying which
    file is missing, instead of training on without the term it was configured with.
    """
    if weight < 0:
        raise ValueError(f"LPIPS loss weight must be >= 0, got {weight}")
    if weight == 0:
        return None
    return LPIPS.from_files(alexnet_weights, head_weights)

"""Loading the released BackgroundMattingV2 files from local paths, with errors that name the file.

Two released formats (GitHub release v1.0.0 / the authors' Drive folder):
- `pytorch_<backbone>.pth`: a plain `MattingRefine.state_dict()` (train_refine.py), read here with the
  weights-only unpickler and loaded strictly. A `MattingBase` takes the same file minus `refiner.*`, dropped
  explicitly (upstream's scripts use strict=False for that, which also hides genuinely wrong files).
- `torchscript_<backbone>_fp32.pth` / `_fp16.pth`: `torch.jit.script` of a wrapper that holds the network
  under `model.` and hoists backbone_scale, refine_mode, refine_sample_pixels, refine_threshold and
  refine_prevent_oversampling to top-level attributes, which the caller sets after loading; its forward takes
  (src, bgr) and returns MattingRefine's 6-tuple. `MattingRefineTorchScriptWrapper` rebuilds that layout.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from avat3r_core.errors import Avat3rError
from avat3r_core.models.bgmv2.network import BACKBONES, MattingBase, MattingRefine
from avat3r_core.models.keys import key_mismatch, name_keys
from avat3r_core.store.atomic import atomic_path

RANDOM_WEIGHTS_MARKER = "avat3r.random_weights"
TORCHSCRIPT_ATTRIBUTES = (
    "backbone_scale",
    "refine_mode",
    "refine_sample_pixels",
    "refine_threshold",
    "refine_prevent_oversampling",
)


class CheckpointError(Avat3rError):
    """A BGMv2 checkpoint is missing, unreadable or does not fit the requested model; names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"BGMv2 checkpoint {self.path}: {message}")


def detect_backbone(keys: list[str] | set[str]) -> str | None:
    """Guess the backbone from state-dict keys (None if it is not a BGMv2 layout); used in error messages."""
    keys = set(keys)
    if any(k.startswith("backbone.features.") for k in keys):
        return "mobilenetv2"
    if any(k.startswith("backbone.layer3.") for k in keys):
        return "resnet101" if "backbone.layer3.22.conv1.weight" in keys else "resnet50"
    return None


def is_torchscript_file(path: str | Path) -> bool:
    """True for a TorchScript archive (it carries `constants.pkl` and `code/`; a state dict does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")


def read_state_dict(path: str | Path) -> OrderedDict[str, Tensor]:
    """Read a plain state dict with the weights-only unpickler (no code from the file is executed)."""
    path = Path(path)
    _check_exists(path)
    if is_torchscript_file(path):
        raise CheckpointError(
            path, "is a TorchScript archive, not a state dict (load it with load_torchscript)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the loader raises many types (UnpicklingError, RuntimeError, EOFError...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            path, f"cannot be read as a PyTorch state dict (truncated or corrupt?): {first_line}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            path, f"is not a plain state dict; non-tensor entries: {name_keys([str(k) for k in bad])}"
        )
    if obj and all(k.startswith("module.") for k in obj):  # saved from a DataParallel wrapper
        stripped: OrderedDict[str, Tensor] = OrderedDict((k[len("module.") :], v) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            stripped._metadata = obj._metadata  # type: ignore[attr-defined]
        obj = stripped
    return obj  # type: ignore[return-value]


def is_random_checkpoint(state_dict: dict[str, Tensor]) -> bool:
    """True if `write_random_checkpoint` wrote it (the marker sits in the state dict's `_metadata`)."""
    metadata = getattr(state_dict, "_metadata", None) or {}
    return bool(metadata.get("", {}).get(RANDOM_WEIGHTS_MARKER, False))


def load_state_dict_strict(
    model: nn.Module, state_dict: dict[str, Tensor], path: str | Path, *, drop_refiner: bool = False
) -> None:
    """Load with every key accounted for; missing/unexpected keys and shape mismatches are named."""
    if drop_refiner:
        kept = OrderedDict((k, v) for k, v in state_dict.items() if not k.startswith("refiner."))
        if hasattr(state_dict, "_metadata"):
            kept._metadata = state_dict._metadata  # type: ignore[attr-defined]
        state_dict = kept
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = key_mismatch(missing, unexpected)
        wanted = detect_backbone(list(expected))
        found = detect_backbone(list(state_dict))
        if found is not None and found != wanted:
            parts.append(f"the file looks like a {found} checkpoint, the model is {wanted}")
        raise CheckpointError(path, "; ".join(parts))
    mismatched = [
        f"{k} {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        raise CheckpointError(path, f"{len(mismatched)} shape mismatches: {name_keys(mismatched)}")
    model.load_state_dict(state_dict, strict=True)


def load_model(
    path: str | Path,
    backbone: str,
    *,
    base_only: bool = False,
    **refine_kwargs: object,
) -> tuple[nn.Module, bool]:
    """Build MattingRefine (or MattingBase if `base_only`) and load a released state dict into it, eval mode.

    Returns (model, random_weights) where random_weights says the file came from `write_random_checkpoint`.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown BGMv2 backbone {backbone!r}; expected one of {BACKBONES}")
    state_dict = read_state_dict(path)
    model: nn.Module = MattingBase(backbone) if base_only else MattingRefine(backbone, **refine_kwargs)  # type: ignore[arg-type]
    load_state_dict_strict(model, state_dict, path, drop_refiner=base_only)
    return model.eval(), is_random_checkpoint(state_dict)


def load_torchscript(
    path: str | Path, backbone: str | None = None, map_location: str = "cpu"
) -> torch.ScriptModule:
    """torch.jit.load a released TorchScript export and check it has the wrapper's attributes and backbone.

    Loading TorchScript executes the archive's own code, so only load files you trust (as with the releases).
    """
    path = Path(path)
    _check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=map_location)
    except Exception as exc:  # RuntimeError from the C++ reader, ValueError, OSError...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            path, f"cannot be read as TorchScript (truncated or corrupt?): {first_line}"
        ) from exc
    absent = [name for name in TORCHSCRIPT_ATTRIBUTES if not hasattr(module, name)]
    if absent:
        raise CheckpointError(path, f"TorchScript module lacks the BGMv2 export attributes {absent}")
    keys = [re.sub(r"^model\.", "", k) for k in module.state_dict()]
    found = detect_backbone(keys)
    if backbone is not None and found != backbone:
        raise CheckpointError(path, f"TorchScript model has backbone {found}, expected {backbone}")
    return module.eval()


class MattingRefineTorchScriptWrapper(nn.Module):
    """Layout of the released TorchScript files: `model` = MattingRefine, the settings hoisted to the top.

    Scripted, the attributes stay writable after `torch.jit.load`; forward copies them into the network.
    """

    def __init__(self, model: MattingRefine) -> None:
        super().__init__()
        self.model = model
        self.backbone_scale = model.backbone_scale
        self.refine_mode = model.refiner.mode
        self.refine_sample_pixels = model.refiner.sample_pixels
        self.refine_threshold = model.refiner.threshold
        self.refine_prevent_oversampling = model.refiner.prevent_oversampling

    def forward(self, src: Tensor, bgr: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        self.model.backbone_scale = self.backbone_scale
        self.model.refiner.mode = self.refine_mode
        self.model.refiner.sample_pixels = self.refine_sample_pixels
        self.model.refiner.threshold = self.refine_threshold
        self.model.refiner.prevent_oversampling = self.refine_prevent_oversampling
        return self.model(src, bgr)


def export_torchscript(model: MattingRefine, path: str | Path, half: bool = False) -> Path:
    """Script `model` in the released TorchScript layout (as upstream export_torchscript.py does)."""
    wrapper = MattingRefineTorchScriptWrapper(model).eval()
    for parameter in wrapper.parameters():
        parameter.requires_grad_(False)
    if half:
        wrapper = wrapper.half()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        scripted = torch.jit.script(wrapper)
        with atomic_path(path) as temporary:
            scripted.save(str(temporary))
    return Path(path)


def write_random_checkpoint(path: str | Path, backbone: str = "mobilenetv2", seed: int = 0) -> Path:
    """Write a randomly initialised full-size MattingRefine state dict in the released layout.

    For demos and tests without the real weights: it loads strictly through the normal path, and a marker
    in the state dict's `_metadata` (not a key, so strict loading is unaffected) makes `BGMv2Matter`
    report RANDOM WEIGHTS. The output is deterministic for a seed and the global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MattingRefine(backbone)
    state_dict = model.state_dict()
    state_dict._metadata[""][RANDOM_WEIGHTS_MARKER] = f"seed={seed}"  # type: ignore[attr-defined]
    with atomic_path(path) as temporary:
        torch.save(state_dict, temporary)
    return Path(path)

"""Sapiens (v1) pretrain backbones as timm VisionTransformers, loaded from local files only.

Avat3r conditions on Sapiens-2B features: the last-layer patch tokens of the MAE-pretrained ViT, 1920 x 64
x 64 for a 1024 x 1024 image. Neither timm nor transformers ships Sapiens v1, but the network is a plain
pre-norm ViT (class token, fixed 2-D sin-cos position table, LayerNorm eps 1e-6, qkv bias, exact GELU, final
norm), so a timm `VisionTransformer` of the right size holds the released weights after renaming the
mmpretrain keys.

Released files (Hugging Face `facebook/sapiens-pretrain-*`; cc-by-nc-4.0, so users supply them):
- `sapiens_<size>_epoch_<n>_clean.pth`: a plain fp32 backbone state dict with mmpretrain names, read here
  with the weights-only unpickler. Raw mmengine checkpoints (`state_dict` wrapper, `backbone.` prefix, MAE
  `neck.`/`head.`/`data_preprocessor.` entries) are accepted too; everything outside the backbone is dropped
  and the backbone is loaded strictly, because mmpretrain's own loader silently leaves a random backbone
  when the prefix does not match (sapiens issues #73/#119).
- `*_torchscript.pt2`: `torch.jit.trace` of the whole MAE model with `out_type='featmap'` on a normalised
  (1, 3, 1024, 1024) example; it returns a one-element tuple `(feat,)`. The traced position-table branch fixes
  the input at the traced size.
- `*_bfloat16.pt2`: a `torch.export` ExportedProgram of the same model cast to bf16 on CUDA, dynamic in the
  batch dimension only. Loaded with `torch.export.load(...).module()`; it is tied to the torch version and
  device it was exported with (upstream: PyTorch 2.3, A100), so it is a GPU convenience, not the reference
  path.

All three take the same normalised input, so one preprocessing step serves them: squash to the input size
(Pillow bicubic on uint8, as upstream's `Resize(scale=1024, backend='pillow')`), then ImageNet mean/std on
the 0..255 scale.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from avat3r_core.errors import Avat3rError
from avat3r_core.models.keys import key_mismatch, name_keys
from avat3r_core.models.sapiens_archs import PATCH_SIZE, PRETRAIN_IMG_SIZE, SAPIENS_ARCHS, sapiens_arch_key
from avat3r_core.store.atomic import atomic_path

# SelfSupDataPreprocessor in the pretrain configs: ImageNet statistics on the 0..255 scale, RGB order.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
RANDOM_WEIGHTS_MARKER = "avat3r.random_weights"

# mmpretrain (left) -> timm (right). Shapes and the fused qkv order are identical, so renaming is all it
# takes. The top-level `ln1` (final norm) must not be confused with the per-block `layers.N.ln1`; the
# anchors keep them apart.
_TO_TIMM: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^patch_embed\.projection\.", "patch_embed.proj."),
        (r"^layers\.(\d+)\.ln1\.", r"blocks.\1.norm1."),
        (r"^layers\.(\d+)\.ln2\.", r"blocks.\1.norm2."),
        (r"^layers\.(\d+)\.attn\.qkv\.", r"blocks.\1.attn.qkv."),
        (r"^layers\.(\d+)\.attn\.proj\.", r"blocks.\1.attn.proj."),
        (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
        (r"^layers\.(\d+)\.ffn\.layers\.1\.", r"blocks.\1.mlp.fc2."),
        (r"^ln1\.", "norm."),
    )
)
_TO_SAPIENS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^patch_embed\.proj\.", "patch_embed.projection."),
        (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.ln1."),
        (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.ln2."),
        (r"^blocks\.(\d+)\.attn\.qkv\.", r"layers.\1.attn.qkv."),
        (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attn.proj."),
        (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
        (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
        (r"^norm\.", "ln1."),
    )
)


class SapiensCheckpointError(Avat3rError):
    """A Sapiens file is missing, unreadable or does not fit the requested model; names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"Sapiens checkpoint {self.path}: {message}")


# --------------------------------------------------------------------------------------------- architecture


def sapiens_config(name: str) -> dict[str, Any]:
    """The timm `VisionTransformer` sizes of a released Sapiens pretrain model (sapiens_0.3b ... sapiens_2b).

    A plain dict so that tests and callers can shrink it (`{**sapiens_config("sapiens_2b"), "depth": 2}`).
    """
    return {
        **SAPIENS_ARCHS[sapiens_arch_key(name)],
        "mlp_ratio": 4.0,
        "patch_size": PATCH_SIZE,
        "img_size": PRETRAIN_IMG_SIZE,
    }


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def sincos_pos_embed(grid: int | Sequence[int], dim: int, temperature: float = 10000.0) -> Tensor:
    """The fixed MAE position table, (1, 1 + h*w, dim), with a zero row for the class token.

    Sapiens never trains `pos_embed` (MAEViT sets requires_grad=False after filling it this way), so a freshly
    built model gets the same table the released weights carry; mmpretrain's layout is [sin w, cos w, sin h,
    cos h] over a meshgrid of (w, h) in "ij" order.
    """
    height, width = _pair(grid)
    if dim % 4:
        raise ValueError(f"2-D sin-cos position table needs a width divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(
        torch.arange(width, dtype=torch.float32), torch.arange(height, dtype=torch.float32), indexing="ij"
    )
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), table], dim=0)[None]


def build_sapiens(
    name: str | Mapping[str, Any] = "sapiens_2b", img_size: int | Sequence[int] | None = None
) -> VisionTransformer:
    """A timm `VisionTransformer` shaped like a Sapiens pretrain backbone, in eval mode.

    `name` is a released model name or a dict of sizes (`embed_dim`, `depth`, `num_heads`, optionally
    `mlp_ratio`, `patch_size`, `img_size`) so tests can build tiny ones. `img_size` overrides the dict's and
    fixes the token grid (timm's own dynamic-size path resamples the position table with antialiasing, which
    upstream does not, so a different input size means a model built at that size; see `resize_pos_embed`).
    `global_pool=''` keeps the final LayerNorm in `norm` (with 'avg' timm would move it to `fc_norm`).
    """
    sizes = dict(sapiens_config(name) if isinstance(name, str) else name)
    missing = {"embed_dim", "depth", "num_heads"} - set(sizes)
    if missing:
        raise ValueError(f"Sapiens sizes need {sorted(missing)}")
    size = _pair(img_size if img_size is not None else sizes.get("img_size", PRETRAIN_IMG_SIZE))
    patch = int(sizes.get("patch_size", PATCH_SIZE))
    if size[0] % patch or size[1] % patch:
        raise ValueError(f"input size {size} is not a multiple of the patch size {patch}")
    model = VisionTransformer(
        img_size=size,
        patch_size=patch,
        in_chans=3,
        num_classes=0,
        global_pool="",
        embed_dim=int(sizes["embed_dim"]),
        depth=int(sizes["depth"]),
        num_heads=int(sizes["num_heads"]),
        mlp_ratio=float(sizes.get("mlp_ratio", 4.0)),
        qkv_bias=True,
        class_token=True,
        no_embed_class=False,
        pre_norm=False,
        final_norm=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
    )
    with torch.no_grad():
        model.pos_embed.copy_(sincos_pos_embed(model.patch_embed.grid_size, model.embed_dim))
    model.pos_embed.requires_grad_(False)
    return model.eval()


def resize_pos_embed(pos_embed: Tensor, grid: int | Sequence[int]) -> Tensor:
    """Resample a (1, 1 + h*w, C) table with a class row to a new (h', w') grid, as upstream does.

    mmpretrain's `resize_pos_embed`: bicubic, align_corners=False, no antialias, computed in float32 and cast
    back; the class row is kept as is. The source grid is assumed square (all released tables are 64 x 64).
    """
    target = _pair(grid)
    tokens = pos_embed.shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"position table with {tokens} patch rows is not a square grid")
    if (side, side) == target:
        return pos_embed
    channels = pos_embed.shape[2]
    patches = pos_embed[:, 1:].reshape(1, side, side, channels).permute(0, 3, 1, 2).float()
    resized = F.interpolate(patches, size=target, mode="bicubic", align_corners=False, antialias=False)
    resized = resized.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], resized], dim=1)


# ------------------------------------------------------------------------------------------- key conversion


def _rename(key: str, table: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, replacement in table:
        renamed, count = pattern.subn(replacement, key, count=1)
        if count:
            return renamed
    return key


def to_timm_key(key: str) -> str:
    """mmpretrain backbone key -> timm key (`cls_token`, `pos_embed` and unknown keys pass unchanged)."""
    return _rename(key, _TO_TIMM)


def to_sapiens_key(key: str) -> str:
    """timm key -> mmpretrain backbone key; used to name missing keys the way the file would spell them."""
    return _rename(key, _TO_SAPIENS)


def _guess_arch(state: Mapping[str, Tensor]) -> str | None:
    """The released model whose width and depth the file has, for 'wrong --name' hints in errors."""
    cls = state.get("cls_token")
    if cls is None:
        return None
    depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    for arch, sizes in SAPIENS_ARCHS.items():
        if sizes["embed_dim"] == cls.shape[-1] and sizes["depth"] == depth:
            return arch
    return None


def extract_backbone(obj: Mapping[str, Any], path: str | Path) -> OrderedDict[str, Tensor]:
    """The backbone entries of a loaded checkpoint, in mmpretrain naming without the `backbone.` prefix.

    Accepts the `_clean.pth` layout (plain backbone), a `state_dict`/`model` wrapper and a full MAE state dict
    whose backbone sits under `backbone.`; in that last case everything else (MAE decoder `neck.`, `head.`,
    `data_preprocessor.`, `target_generator.`) is dropped on purpose.
    """
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise SapiensCheckpointError(path, f"is not a state dict of tensors; other entries: {name_keys(bad)}")
    prefixed = [k for k in obj if k.startswith("backbone.")]
    if prefixed:
        return OrderedDict((k[len("backbone.") :], obj[k]) for k in prefixed)
    return OrderedDict(obj.items())


def convert_state_dict(
    state: Mapping[str, Tensor], model: VisionTransformer, path: str | Path
) -> OrderedDict[str, Tensor]:
    """mmpretrain backbone state -> timm state for `model`, checked key by key and shape by shape.

    Strict on purpose: a partial match would leave random weights behind silently. Missing keys are named as
    the file would spell them, unexpected ones as the file does. The position table is resampled when the
    model's grid differs from the file's (upstream does the same at load time and at every forward).
    """
    expected = model.state_dict()
    wanted = {to_sapiens_key(k): k for k in expected}
    missing = [k for k in wanted if k not in state]
    unexpected = [k for k in state if k not in wanted]
    if missing or unexpected:
        parts = key_mismatch(missing, unexpected)
        guess = _guess_arch(state)
        if guess is not None:
            parts.append(f"the file looks like {guess}")
        raise SapiensCheckpointError(path, "; ".join(parts))
    converted: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        converted[wanted[key]] = value
    pos = converted["pos_embed"]
    target = expected["pos_embed"]
    if pos.ndim == 3 and pos.shape[2] == target.shape[2] and pos.shape[1] != target.shape[1]:
        try:
            converted["pos_embed"] = resize_pos_embed(pos, model.patch_embed.grid_size)
        except ValueError as exc:
            raise SapiensCheckpointError(path, f"pos_embed {tuple(pos.shape)}: {exc}") from exc
    mismatched = [
        f"{to_sapiens_key(k)} {tuple(v.shape)} in file vs {tuple(expected[k].shape)} in model"
        for k, v in converted.items()
        if v.shape != expected[k].shape
    ]
    if mismatched:
        guess = _guess_arch(state)
        hint = f"; the file looks like {guess}" if guess is not None else ""
        raise SapiensCheckpointError(path, f"shape mismatch: {name_keys(mismatched)}{hint}")
    return converted


# ------------------------------------------------------------------------------------------------ file I/O


def _archive_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def file_kind(path: str | Path) -> str:
    """'torchscript', 'exported' or 'state_dict', from the archive's contents (both lite files are .pt2)."""
    names = _archive_names(Path(path))
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(
        n.endswith(("/archive_format", "/models/model.json", "serialized_exported_program.json"))
        for n in names
    ):
        return "exported"
    return "state_dict"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_sapiens_state_dict(path: str | Path) -> tuple[OrderedDict[str, Tensor], bool]:
    """(backbone state in mmpretrain naming, random_weights) from a `.pth`, read weights-only.

    The weights-only unpickler runs no code from the file. The random-weights marker lives in the state
    dict's `_metadata` (see `write_random_sapiens`), so it is read before the dict is rebuilt.
    """
    path = Path(path)
    if not path.is_file():
        raise SapiensCheckpointError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError... depending on how it is broken
        raise SapiensCheckpointError(
            path,
            "cannot be read as a weights-only PyTorch state dict (truncated or corrupt, or a raw mmengine "
            f"training checkpoint; re-save its state_dict): {_first_line(exc)}",
        ) from exc
    if not isinstance(obj, Mapping):
        raise SapiensCheckpointError(path, f"holds a {type(obj).__name__}, not a state dict")
    inner = obj.get("state_dict", obj.get("model", obj))
    random_weights = any(_is_marked(candidate) for candidate in (obj, inner))
    return extract_backbone(obj, path), random_weights


def _is_marked(state: Any) -> bool:
    metadata = getattr(state, "_metadata", None) or {}
    return bool(metadata.get("", {}).get(RANDOM_WEIGHTS_MARKER, False))


def write_random_sapiens(path: str | Path, sizes: str | Mapping[str, Any], seed: int = 0) -> Path:
    """Write a random backbone in the released `*_clean.pth` layout (mmpretrain names, no prefix, fp32).

    For tests and demos without the real (non-commercial) weights. It loads through the normal path; the
    marker sits in the OrderedDict's `_metadata` (the per-module version table torch already pickles with
    every state dict) rather than as a key, so the file still has exactly the released keys, strict loading
    needs no special case, and the weights-only unpickler restores it. Deterministic per seed; the global RNG
    is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sapiens(sizes)
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name == "pos_embed":
                    continue  # fixed sin-cos table, as released
                if name.endswith("weight") and tensor.ndim == 1:  # LayerNorm gains: near 1, not exactly
                    tensor.copy_(1.0 + 0.1 * torch.randn_like(tensor))
                elif name.endswith("bias") or name == "cls_token":
                    tensor.copy_(0.02 * torch.randn_like(tensor))
                else:
                    tensor.copy_(torch.randn_like(tensor) / math.sqrt(tensor[0].numel()))
    state: OrderedDict[str, Tensor] = OrderedDict(
        (to_sapiens_key(k), v.detach().clone().contiguous()) for k, v in model.state_dict().items()
    )
    state._metadata = OrderedDict({"": {RANDOM_WEIGHTS_MARKER: f"seed={seed}"}})  # type: ignore[attr-defined]
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return Path(path)


# ------------------------------------------------------------------------------------------ preprocessing


def squash_resize(images: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Resize uint8 (N, H, W, 3) images to (N, h, w, 3) without keeping the aspect ratio.

    Upstream's pretrain pipeline is `Resize(scale=1024, interpolation='bicubic', backend='pillow')`: an int
    scale means a square target with keep_ratio=False, and mmcv's pillow backend returns uint8, so the
    rounding happens before normalisation. Pillow is used here for the same numbers (its bicubic filter
    widens on downscaling, which torch's non-antialiased bicubic would not).
    """
    height, width = _pair(size)
    if images.shape[1:3] == (height, width):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
            for image in images
        ]
    )


def normalize(images: Tensor) -> Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W), ImageNet mean/std on the 0..255 scale as upstream."""
    mean = torch.tensor(IMAGENET_MEAN_255, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD_255, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() - mean) / std


def _as_uint8_batch(images: np.ndarray | Tensor) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------------------------- extractor


class _TimmFeatures(nn.Module):
    """timm backbone -> (N, C, H/16, W/16): final-normed last-layer tokens with the class token dropped."""

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.model.forward_features(x)
        height, width = self.model.patch_embed.grid_size
        patches = tokens[:, self.model.num_prefix_tokens :]
        return patches.reshape(x.shape[0], height, width, -1).permute(0, 3, 1, 2)


class _TupleFeatures(nn.Module):
    """A lite file (TorchScript or ExportedProgram) -> its one feature map; upstream returns `(feat,)`."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x.to(self.dtype))
        if isinstance(out, list | tuple):
            out = out[0]
        if not isinstance(out, Tensor) or out.ndim != 4:
            raise RuntimeError(
                f"the Sapiens file returned {type(out).__name__}, not a (N, C, h, w) feature map"
            )
        return out


class SapiensFeatures(nn.Module):
    """Callable Sapiens feature extractor: uint8 RGB (N, H, W, 3) -> float32 (N, C, h/16, w/16).

    Every image is squashed to `input_size` (1024 x 1024 for the pretrain models) before the network, so the
    output grid is always input_size / 16 (64 x 64) whatever the crop size. Runs in fp32 on CPU and under bf16
    autocast on CUDA (the bf16 ExportedProgram is bf16 throughout). `description` is one line for logs and
    store attributes; it ends in "RANDOM WEIGHTS" for files written by `write_random_sapiens`.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        input_size: tuple[int, int],
        device: torch.device,
        description: str,
        random_weights: bool = False,
        batch_size: int = 4,
    ) -> None:
        super().__init__()
        self.network = network
        self.input_size = input_size
        self.device = device
        self.random_weights = random_weights
        self.batch_size = batch_size
        self.description = description + (", RANDOM WEIGHTS" if random_weights else "")

    def preprocess(self, images: np.ndarray | Tensor) -> Tensor:
        """Squash + normalise on the CPU, returned on the extractor's device."""
        batch = squash_resize(_as_uint8_batch(images), self.input_size)
        return normalize(torch.from_numpy(batch)).to(self.device)

    def fingerprint(self) -> str:
        """Which weights at which squash size: a model trained on features of one extractor is evaluated on
        features of the same one (`recon.compat`). See `weights_fingerprint`."""
        return f"{weights_fingerprint(self.network)}@{self.input_size[0]}x{self.input_size[1]}"

    @torch.inference_mode()
    def forward(self, images: np.ndarray | Tensor) -> Tensor:
        batch = _as_uint8_batch(images)
        outputs = []
        for start in range(0, len(batch), self.batch_size):
            x = self.preprocess(batch[start : start + self.batch_size])
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                outputs.append(self.network(x).float())
        return torch.cat(outputs) if outputs else torch.empty(0)


FINGERPRINT_SAMPLES = 256


@torch.inference_mode()
def weights_fingerprint(network: nn.Module) -> str:
    """16 hex digits naming a network's weights, cheap for 2B parameters and blind to how they are stored.

    Per tensor: its shape and FINGERPRINT_SAMPLES evenly spaced values rounded to bfloat16 (the fp32 state
    dict and the bf16 export of one model agree); the per-tensor digests are sorted, so key names and order
    (timm's or mmpretrain's, TorchScript's) do not matter. Different trainings or random initialisations
    differ in practically every sampled value.
    """
    digests = []
    for tensor in network.state_dict().values():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        flat = tensor.detach().reshape(-1)
        picks = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT_SAMPLES, flat.numel())).long()
        values = flat[picks.to(flat.device)].to(torch.bfloat16).float().cpu().numpy()
        digest = hashlib.sha256(str(tuple(tensor.shape)).encode() + values.tobytes()).hexdigest()
        digests.append(digest)
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


def load_sapiens(
    path: str | Path,
    name: str | Mapping[str, Any] = "sapiens_2b",
    device: str | torch.device = "cpu",
    input_size: int | Sequence[int] = PRETRAIN_IMG_SIZE,
    batch_size: int = 4,
) -> SapiensFeatures:
    """Load a local Sapiens file (state dict, TorchScript or bf16 ExportedProgram) as a feature extractor.

    `name` (a released name or a dict of sizes) only matters for state dicts, which carry no architecture.
    `input_size` is the squash target; for a state dict the position table is resampled to its grid when
    it differs from the file's, for the lite files it must be the size they were traced/exported at (1024).
    """
    path = Path(path)
    device = torch.device(device)
    size = _pair(input_size)
    if not path.is_file():
        raise SapiensCheckpointError(path, "file not found" if not path.exists() else "not a regular file")
    kind = file_kind(path)
    label = name if isinstance(name, str) else "custom sizes"
    if kind == "torchscript":
        try:
            # torch 2.10+ flags TorchScript as deprecated; the released file is TorchScript all the same
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise SapiensCheckpointError(
                path, f"cannot be loaded as TorchScript: {_first_line(exc)}"
            ) from exc
        network: nn.Module = _TupleFeatures(module.eval(), torch.float32)
        description = f"Sapiens TorchScript {path.name} ({size[0]}x{size[1]} input, {device.type})"
        random_weights = False
    elif kind == "exported":
        network, description = _load_exported(path, device, size)
        random_weights = False
    else:
        state, random_weights = read_sapiens_state_dict(path)
        model = build_sapiens(name, img_size=size)
        model.load_state_dict(convert_state_dict(state, model, path), strict=True)
        model.pos_embed.requires_grad_(False)
        network = _TimmFeatures(model.eval())
        precision = "bf16 autocast" if device.type == "cuda" else "fp32"
        description = (
            f"Sapiens {label} from {path.name} ({size[0]}x{size[1]} input, {device.type} {precision})"
        )
    network = network.to(device) if kind != "exported" else network
    return SapiensFeatures(
        network,
        input_size=size,
        device=device,
        description=description,
        random_weights=random_weights,
        batch_size=batch_size,
    )


def _load_exported(path: Path, device: torch.device, size: tuple[int, int]) -> tuple[nn.Module, str]:
    """The bf16 ExportedProgram (`torch.export.load(p).module()`); GPU-oriented, kept deliberately small.

    Upstream exports on CUDA with the weights in bf16 and a dynamic batch (1..64); device placement is baked
    into the graph, so a CUDA export generally cannot run on the CPU and vice versa. The input dtype follows
    the program's weights.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.export.load(str(path)).module()
    except Exception as exc:
        raise SapiensCheckpointError(
            path, f"cannot be loaded as a torch.export program: {_first_line(exc)}"
        ) from exc
    tensors = itertools.chain(module.parameters(), module.buffers())
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
    description = f"Sapiens ExportedProgram {path.name} ({size[0]}x{size[1]} input, {device.type} {dtype})"
    return _TupleFeatures(module, dtype), description

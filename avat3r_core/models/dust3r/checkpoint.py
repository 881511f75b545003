"""Loading DUSt3R checkpoints (official ``.pth`` or Hugging Face folder) with strict key and shape checks.

Upstream ``load_model`` ``eval``s the constructor string stored in the checkpoint and unpickles with
``weights_only=False``; both execute whatever the file says. Here the file is read with the weights-only
unpickler (only ``argparse.Namespace`` allow-listed) and the constructor string is parsed with ``ast``,
accepting nothing but keyword arguments with literal values. Loading is strict: every key and shape must
match, so a checkpoint of another architecture cannot load silently half-initialised.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avat3r_core.errors import Avat3rError

from .network import AsymmetricCroCo3DStereo

CLASS_NAME = "AsymmetricCroCo3DStereo"
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
_SHOW = 5  # how many offending keys an error message lists

# Keys the DPT head saves twice (``scratch.layer_rn`` is a ModuleList of the ``layerN_rn`` convs).
# safetensors keeps one name per shared storage, so HF files lack one of each pair.
_ALIASES = {
    f"downstream_head{h}.dpt.scratch.layer_rn.{i}.weight": (
        f"downstream_head{h}.dpt.scratch.layer{i + 1}_rn.weight"
    )
    for h in (1, 2)
    for i in range(4)
}

# Constructor arguments a checkpoint may set: every literal-valued one (norm_layer is a callable).
ALLOWED_KWARGS = frozenset(inspect.signature(AsymmetricCroCo3DStereo.__init__).parameters) - {
    "self",
    "norm_layer",
}
_TUPLE_KWARGS = ("img_size", "depth_mode", "conf_mode")


class CheckpointError(Avat3rError):
    """A DUSt3R checkpoint cannot be read or does not fit the network; the message names the file."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file = Path(file)
        super().__init__(f"DUSt3R checkpoint {self.file}: {message}")


# ---------------------------------------------------------------------------------------------------------
# constructor string / config parsing


def _literal(node: ast.expr, source: str) -> Any:
    """Evaluate a literal expression: numbers, strings, bools, None, tuples/lists of them, inf, -inf."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if isinstance(node, ast.Name) and node.id == "inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand, source)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"unary sign on a non-number in {ast.get_source_segment(source, node)!r}")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_literal(e, source) for e in node.elts)
    raise ValueError(f"not a literal: {ast.get_source_segment(source, node)!r}")


def parse_constructor_string(text: str) -> dict[str, Any]:
    """Parse ``"AsymmetricCroCo3DStereo(k=v, ...)"`` into kwargs without evaluating any code."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"constructor string is not valid Python syntax: {exc.msg}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == CLASS_NAME):
        raise ValueError(f"constructor string must be a call of {CLASS_NAME}(...), got {text[:80]!r}")
    if call.args:
        raise ValueError("constructor string has positional arguments; only keyword arguments are accepted")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ValueError("constructor string uses **kwargs unpacking, which is not accepted")
        try:
            kwargs[kw.arg] = _literal(kw.value, text)
        except ValueError as exc:
            raise ValueError(f"argument {kw.arg!r}: {exc}") from None
    return kwargs


def _normalise_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate names, turn JSON lists into tuples, and apply upstream's inference-time overrides.

    Like upstream ``load_model``, the training-time ``ManyAR_PatchEmbed``/``landscape_only=True`` become
    ``PatchEmbedDust3R``/``landscape_only=False`` so portrait images run natively (no transposition).
    """
    unknown = sorted(set(kwargs) - ALLOWED_KWARGS)
    if unknown:
        raise ValueError(f"unknown constructor arguments {unknown}; accepted: {sorted(ALLOWED_KWARGS)}")
    out = dict(kwargs)
    for key in _TUPLE_KWARGS:
        if isinstance(out.get(key), list | tuple):
            out[key] = tuple(out[key])
    if out.get("patch_embed_cls") == "ManyAR_PatchEmbed":
        out["patch_embed_cls"] = "PatchEmbedDust3R"
    out["landscape_only"] = False
    return out


def constructor_string(kwargs: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_constructor_string`, in the upstream ``args.model`` style."""

    def fmt(v: Any) -> str:
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, tuple | list):
            inner = ", ".join(fmt(e) for e in v)
            return f"({inner},)" if len(v) == 1 else f"({inner})"
        return repr(v)

    return f"{CLASS_NAME}({', '.join(f'{k}={fmt(v)}' for k, v in kwargs.items())})"


# ---------------------------------------------------------------------------------------------------------
# reading the two layouts


def _read_pth(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], bool]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files; all mean "unreadable"
        text = str(exc)
        if "Weights only load failed" in text:
            detail = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            raise CheckpointError(
                path,
                "holds Python objects other than tensors and argparse.Namespace, refused by the "
                f"weights-only unpickler ({detail or 'unsupported object'})",
            ) from exc
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise CheckpointError(
            path, f"cannot read (corrupt, truncated or not a torch file?): {first}"
        ) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(path, "expected a dict with 'model' (state dict) and 'args' entries")
    args = ckpt.get("args")
    text = getattr(args, "model", None)
    if not isinstance(text, str):
        raise CheckpointError(path, "no 'args.model' constructor string; cannot tell the architecture")
    try:
        kwargs = _normalise_kwargs(parse_constructor_string(text))
    except ValueError as exc:
        raise CheckpointError(path, f"bad args.model: {exc}") from None
    state = ckpt["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, "'model' is not a state dict of tensors")
    # write_random_dust3r marks its files, so logs and stores can say a random network made them.
    return kwargs, dict(state), bool(getattr(args, "random_weights", False))


def _read_hf(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], bool]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = folder / HF_CONFIG, folder / HF_WEIGHTS
    for p in (cfg_path, weights):
        if not p.is_file():
            raise CheckpointError(folder, f"Hugging Face layout needs {p.name}, which is missing")
    try:
        config = json.loads(cfg_path.read_text())  # accepts the mixin's non-standard Infinity tokens
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(cfg_path, f"invalid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(cfg_path, "config must be a JSON object of constructor arguments")
    try:
        kwargs = _normalise_kwargs(config)
    except ValueError as exc:
        raise CheckpointError(cfg_path, str(exc)) from None
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(weights, f"cannot read (corrupt or truncated safetensors?): {exc}") from exc
    return kwargs, state, False


# ---------------------------------------------------------------------------------------------------------
# strict matching


def _resolve_aliases(
    state: dict[str, torch.Tensor], expected: set[str], file: Path
) -> dict[str, torch.Tensor]:
    """Fill in whichever name of an aliased pair is absent; refuse pairs whose tensors disagree."""
    state = dict(state)
    for alias, canonical in _ALIASES.items():
        if alias not in expected or canonical not in expected:
            continue
        a, c = state.get(alias), state.get(canonical)
        if a is None and c is not None:
            state[alias] = c
        elif c is None and a is not None:
            state[canonical] = a
        elif a is not None and c is not None and (a.shape != c.shape or not torch.equal(a, c)):
            raise CheckpointError(file, f"aliased tensors {alias} and {canonical} differ")
    return state


def _list(keys: list[str]) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else f" ({len(keys)})"
    return ", ".join(keys[:_SHOW]) + more


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], file: Path) -> None:
    """Raise :class:`CheckpointError` naming missing/unexpected keys or the first shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list(unexpected)}")
    if problems:
        raise CheckpointError(file, "; ".join(problems) + " (a checkpoint of another architecture?)")
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(file, f"shape mismatch ({len(bad)} tensors): " + "; ".join(bad[:_SHOW]))


def build_from_state(
    kwargs: Mapping[str, Any], state: dict[str, torch.Tensor], file: Path, device: str | torch.device = "cpu"
) -> AsymmetricCroCo3DStereo:
    """Construct on the meta device (no wasted random init for 570 M params), then assign the weights."""
    try:
        with torch.device("meta"):
            model = AsymmetricCroCo3DStereo(**kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(file, f"cannot build the network from its config: {exc}") from None
    state = _resolve_aliases(state, set(model.state_dict()), file)
    check_state_dict(model, state, file)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval()


def load_dust3r(path: str | Path, device: str | torch.device = "cpu") -> AsymmetricCroCo3DStereo:
    """Load an official ``.pth`` file or a Hugging Face folder (config.json + model.safetensors), strictly.

    Returns the network in eval mode on ``device``, with ``random_weights`` set True when the file was
    written by :func:`write_random_dust3r`. Every failure is a :class:`CheckpointError`.
    """
    path = Path(path)
    if path.is_dir():
        kwargs, state, random_weights = _read_hf(path)
    elif path.is_file():
        kwargs, state, random_weights = _read_pth(path)
    else:
        raise CheckpointError(path, "no such file or folder")
    model = build_from_state(kwargs, state, path, device)
    model.random_weights = random_weights
    return model


# ---------------------------------------------------------------------------------------------------------
# tiny random checkpoints for tests and demos

TINY_KWARGS: dict[str, Any] = {
    "pos_embed": "RoPE100",
    "patch_embed_cls": "PatchEmbedDust3R",
    "img_size": (64, 64),
    "head_type": "linear",
    "output_mode": "pts3d",
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
    "enc_embed_dim": 64,
    "enc_depth": 2,
    "enc_num_heads": 4,
    "dec_embed_dim": 48,
    "dec_depth": 2,
    "dec_num_heads": 4,
    "landscape_only": False,
}


def random_dust3r(seed: int = 0, **kwargs: Any) -> tuple[AsymmetricCroCo3DStereo, dict[str, Any]]:
    """A small network with every parameter re-drawn (non-zero biases, non-unit norms, distinct decoders).

    The default init leaves biases at 0, LayerNorm at 1/0 and was copied decoder-to-decoder upstream; such
    weights would hide mix-ups, so tests need a genuinely random draw. Returns the model and its kwargs.
    """
    full = {**TINY_KWARGS, **kwargs}
    unknown = sorted(set(full) - ALLOWED_KWARGS)
    if unknown:
        raise ValueError(f"unknown constructor arguments {unknown}")
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = AsymmetricCroCo3DStereo(**full)
    state = {}
    for name, t in model.state_dict().items():
        if name.endswith("bias"):
            v = 0.05 * torch.randn(t.shape, generator=gen)
        elif t.ndim == 1:  # LayerNorm weight
            v = 1 + 0.1 * torch.randn(t.shape, generator=gen)
        else:
            v = torch.randn(t.shape, generator=gen) / math.sqrt(t[0].numel())
        state[name] = v
    state = _resolve_aliases(
        {k: v for k, v in state.items() if k not in _ALIASES}, set(model.state_dict()), Path("<random>")
    )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval(), full


def write_random_dust3r(path: str | Path, seed: int = 0, **kwargs: Any) -> Path:
    """Write a tiny random model in the official ``.pth`` layout ({'model', 'args'}), loadable by load_dust3r.

    ``kwargs`` override :data:`TINY_KWARGS` (constructor arguments with literal values only).
    """
    path = Path(path)
    model, full = random_dust3r(seed, **kwargs)
    args = argparse.Namespace(model=constructor_string(full), random_weights=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "args": args}, path)
    return path

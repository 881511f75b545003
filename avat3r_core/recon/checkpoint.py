"""Training checkpoints: written atomically, never broken, and refused when they belong to another model.

A checkpoint holds everything a resumed run needs to continue as if it had never stopped: model and
optimiser state, the step, the RNG states and the config that made it. It is written to a temporary
sibling, read back, and only then renamed over the previous one, so a kill during the write or a
diverged model (non-finite weights) can never replace the last good checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avat3r_core.errors import Avat3rError
from avat3r_core.store.atomic import atomic_path

FORMAT = "avat3r-checkpoint/1"


class CheckpointError(Avat3rError):
    """A training checkpoint is unreadable, broken, or made for a different model or run."""


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (whose state-dict keys carry a ``module.`` prefix)."""
    return getattr(model, "module", model)


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically; refuse (CheckpointError) if any weight is NaN or infinite."""
    path = Path(path)
    weights = unwrap(model).state_dict()
    broken = [
        name for name, value in weights.items() if value.is_floating_point() and not value.isfinite().all()
    ]
    if broken:
        raise CheckpointError(
            f"step {step}: refusing to write {path}: non-finite weights in {broken[:3]}"
            f"{' ...' if len(broken) > 3 else ''}; the previous checkpoint is kept"
        )
    state = {
        "format": FORMAT,
        "step": int(step),
        "model": {name: value.detach().cpu() for name, value in weights.items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "config": dict(config),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as temporary:
        torch.save(_interned(state), temporary)
        torch.load(temporary, map_location="cpu", weights_only=True)  # readable before it replaces anything


def _interned(value: Any) -> Any:
    """`value` with every string interned, so that the same content always pickles to the same bytes.

    Pickle writes a string once and refers back to it when the *same object* recurs: the optimiser's
    'step' keys are one interned object in a fresh run but fresh strings after `load_state_dict` of a
    resumed one, and the two checkpoints differed in bytes while equal in content (found by the faults test).
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {_interned(key): _interned(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_interned(item) for item in value)
    return value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (weights-only unpickling: tensors, numbers, strings and containers)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt or truncated file, or not a torch file at all
        raise CheckpointError(f"checkpoint {path} is unreadable: {error}") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an avat3r training checkpoint ({FORMAT})")
    return state


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configs, as 'key: saved -> current'."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def load_model_weights(
    model: nn.Module, state: Mapping[str, Any], path: str | Path, model_config: Mapping[str, Any]
) -> None:
    """Load a checkpoint's weights strictly; a model of another size fails naming the differing config."""
    saved_model_config = state.get("config", {}).get("model", {})
    current = dict(model_config)
    try:
        unwrap(model).load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        differences = config_differences(saved_model_config, current) if current else []
        hint = f"; model config differs: {', '.join(differences)}" if differences else ""
        first = str(error).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit this model ({first}){hint}") from error

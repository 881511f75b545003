"""The synthetic capture's FLAME codes: what a face tracker would report for the procedural head.

Both layouts write the same codes, so that a model trained on the synthetic Ava-256 capture with FLAME codes
can be driven on the synthetic NeRSemble capture, as the paper drives NeRSemble avatars with the codes of the
tracker it fine-tuned with:

* FLAME expression = the head's blend weights (`expression.BLEND_WEIGHT_NAMES`) in the first columns of
  FLAME's 100 expression coefficients, zeros after them; jaw and eye poses are zero (the procedural head's
  jaw and gaze live in the blend weights already).
* Ava-256 layout (`synthetic.tracking: true`): GAGAvatar tracker output at
  `{root}/gagavatar/{subject}/optim.pkl`, keyed ``f"{segment}_{position}"`` (position within the segment,
  the tracker's numbering when it finds a head in every frame). Read it with
  ``capture.expression_source: flame_gagavatar``, ``flame_tracking: "{root}/gagavatar/{subject}/optim.pkl"``
  and ``flame_video: "{segment}"`` (as in configs/cross_dataset.yaml).
* NeRSemble layout: the benchmark's `flame2023_tracking_v2.npz` per sequence, and GAGAvatar tracker output
  keyed ``f"{sequence}_{position}"`` at the same path as above (`nersemble_writer`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from avat3r_core.store.atomic import atomic_path

from .expression import BLEND_WEIGHT_NAMES

FLAME_EXPRESSION_DIM = 100
GAGAVATAR_TRACKING = "gagavatar/{subject}/optim.pkl"
"""Where the Ava-256-layout writer puts the tracker file, relative to the capture root."""


def flame_expression(weights: np.ndarray) -> np.ndarray:
    """(F, B) blend weights -> (F, 100) float32 FLAME expression coefficients (weights first, then zeros)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    if weights.shape[1] != len(BLEND_WEIGHT_NAMES):
        raise ValueError(f"expected (F, {len(BLEND_WEIGHT_NAMES)}) blend weights, got {weights.shape}")
    out = np.zeros((len(weights), FLAME_EXPRESSION_DIM), np.float32)
    out[:, : weights.shape[1]] = weights
    return out


def gagavatar_entries(segments: list[str], weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """GAGAvatar-format entries for a timeline: `segments[i]` and `weights[i]` of frame i, in capture order.

    Each entry has the tracker's keys and shapes (`capture.expressions.load_gagavatar_tracking`): shape,
    expression, ``posecode = [global 0, jaw 0]``, eyes 0, a full-frame box and an identity transform.
    """
    expression = flame_expression(weights)
    positions: dict[str, int] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for segment, code in zip(segments, expression, strict=True):
        position = positions.get(segment, 0)
        positions[segment] = position + 1
        out[f"{segment}_{position}"] = {
            "shapecode": np.zeros(300, np.float32),
            "expcode": code,
            "posecode": np.zeros(6, np.float32),
            "eyecode": np.zeros(6, np.float32),
            "bbox": np.array([0.0, 0.0, 512.0, 512.0], np.float32),
            "transform_matrix": np.eye(3, 4, dtype=np.float32),
        }
    return out


def write_gagavatar_tracking(path: Path, segments: list[str], weights: np.ndarray) -> None:
    """The tracker's `optim.pkl` (a plain dict of numpy arrays, protocol 4), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Path(temporary).write_bytes(pickle.dumps(gagavatar_entries(segments, weights), protocol=4))

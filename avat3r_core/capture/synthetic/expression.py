"""Blend weights: their names, the per-segment trajectories, and the 256-d expression code that encodes them.

Ava-256 ships a 256-d VAE latent per frame; the synthetic capture ships a code that is a fixed linear image of
the true blend weights plus a little noise, so the pipeline can treat it exactly like the real code (an opaque
256-vector) while tests can still recover the weights by least squares.
"""

from __future__ import annotations

import numpy as np

BLEND_WEIGHT_NAMES: tuple[str, ...] = (
    "jaw_open",
    "jaw_left",
    "eyes_wide",
    "eyes_closed",
    "tongue_out",
    "smile",
    "brow_raise",
    "cheek_puff",
    "gaze_x",
    "gaze_y",
)
"""Expression parameters of the procedural head, in the column order of blend_weights.npy."""

CODE_DIM = 256
CODE_NOISE = 0.01
_CODE_SEED = 0xA7A256  # fixed: the code space is shared by every subject and every config


def _index(name: str) -> int:
    return BLEND_WEIGHT_NAMES.index(name)


def code_matrix() -> np.ndarray:
    """The fixed (256, B) matrix M with code = M @ weights + noise; column norms ~4 so the noise is tiny."""
    rng = np.random.default_rng(_CODE_SEED)
    return rng.normal(0.0, 0.25, size=(CODE_DIM, len(BLEND_WEIGHT_NAMES)))


def encode_blend_weights(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(F, B) weights -> (F, 256) float32 codes, plus N(0, CODE_NOISE) noise (an encoder's jitter)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    codes = weights @ code_matrix().T + rng.normal(0.0, CODE_NOISE, size=(len(weights), CODE_DIM))
    return codes.astype(np.float32)


def decode_blend_weights(code: np.ndarray) -> np.ndarray:
    """Least-squares inverse of the code: (256,) -> (B,) or (F, 256) -> (F, B) blend weights."""
    code = np.asarray(code, dtype=np.float64)
    matrix = code_matrix()
    flat = code.reshape(-1, CODE_DIM)
    weights, *_ = np.linalg.lstsq(matrix, flat.T, rcond=None)
    out = weights.T
    return out[0] if code.ndim == 1 else out


def _bump(s: np.ndarray, start: float, peak: float, end: float) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 profile over normalised segment time s (raised cosine ramps, flat top)."""
    up = np.clip((s - start) / max(peak - start, 1e-6), 0.0, 1.0)
    down = np.clip((end - s) / max(end - peak, 1e-6), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def _smooth_random(rng: np.random.Generator, s: np.ndarray, n: int, lo: float, hi: float) -> np.ndarray:
    """n smooth random signals over s in [0, 1] with values in [lo, hi] (a few random sinusoids)."""
    out = np.zeros((len(s), n))
    for k in range(n):
        freq = rng.uniform(0.5, 2.0, size=3)
        phase = rng.uniform(0.0, 2.0 * np.pi, size=3)
        sig = np.sum(np.sin(2.0 * np.pi * freq[None] * s[:, None] + phase[None]), axis=1) / 3.0
        out[:, k] = lo + (hi - lo) * (0.5 + 0.5 * sig)
    return out


def segment_weights(segment: str, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, B) blend weights over one segment, shaped after what the real segment asks for."""
    s = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.array([0.5])
    w = np.zeros((n_frames, len(BLEND_WEIGHT_NAMES)))
    gaze = _smooth_random(rng, s, 2, -0.35, 0.35)
    w[:, _index("gaze_x")] = gaze[:, 0]
    w[:, _index("gaze_y")] = gaze[:, 1]
    name = segment.lower()
    if "eye_wide" in name or "eyes_wide" in name:
        peak = _bump(s, 0.0, 0.35, 1.0)
        w[:, _index("eyes_wide")] = peak * rng.uniform(0.8, 1.0)
        w[:, _index("brow_raise")] = peak * rng.uniform(0.5, 0.9)
    elif "tongue" in name:
        w[:, _index("jaw_open")] = _bump(s, 0.0, 0.2, 1.0) * rng.uniform(0.6, 0.8)
        w[:, _index("tongue_out")] = _bump(s, 0.1, 0.45, 0.95) * rng.uniform(0.8, 1.0)
    elif "jaw" in name:
        w[:, _index("jaw_open")] = 0.5 - 0.5 * np.cos(2.0 * np.pi * 1.5 * s)
        w[:, _index("jaw_left")] = np.sin(2.0 * np.pi * s + rng.uniform(0, 0.5)) * rng.uniform(0.5, 0.9)
    elif "neutral" in name:
        w[:, : _index("gaze_x")] = np.abs(rng.normal(0.0, 0.02, size=(n_frames, _index("gaze_x"))))
        w[:, _index("gaze_x") :] *= 0.2
    else:  # EXP_free_face and anything unknown: a random mix of everything
        n_expr = _index("gaze_x")
        mix = _smooth_random(rng, s, n_expr, -0.4, 1.0).clip(0.0, 1.0)
        mix[:, _index("jaw_left")] = _smooth_random(rng, s, 1, -0.8, 0.8)[:, 0]
        mix[:, _index("tongue_out")] *= mix[:, _index("jaw_open")] > 0.4
        w[:, :n_expr] = mix
    # Closed eyes cancel wide eyes: keep the two from fighting over the same vertices.
    w[:, _index("eyes_wide")] *= 1.0 - w[:, _index("eyes_closed")]
    return w

"""What happens over time in one capture: frame ids and segments, head motion, expressions, dropped images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avat3r_core.geometry.transforms import rigid, rotation_from_axis_angle

from .config import SyntheticConfig, subject_rng
from .dome import HEAD_CENTRE_MM
from .expression import encode_blend_weights, segment_weights

HEAD_BASE_ROTATION = rotation_from_axis_angle(np.array([0.0, np.pi, 0.0]))
"""Head-local +z (face) points to world -z: the subject faces the dome's world origin side."""
POSE_AMPLITUDE_DEG = (10.0, 16.0, 5.0)  # pitch, yaw, roll around the head-local axes
POSE_AMPLITUDE_MM = (20.0, 12.0, 20.0)


@dataclass(frozen=True)
class Timeline:
    """Per-frame data of one capture (F frames in time order)."""

    frame_ids: np.ndarray  # (F,) int64 capture frame numbers
    segments: list[str]  # (F,) segment of each frame
    head_to_world_mm: np.ndarray  # (F, 4, 4)
    weights: np.ndarray  # (F, B)
    codes: np.ndarray  # (F, 256) float32
    missing: list[tuple[int, int]]  # (camera index, frame index) pairs whose image is dropped


def _frames(cfg: SyntheticConfig, sid: str) -> tuple[np.ndarray, list[str]]:
    """Non-contiguous capture frame numbers: strides of 4-8 inside a segment, gaps between segments."""
    rng = subject_rng(cfg, sid, "frames")
    current = int(rng.integers(9000, 14000))
    ids: list[int] = []
    segs: list[str] = []
    for seg in cfg.segments:
        stride = int(rng.integers(4, 9))
        ids.extend(current + stride * np.arange(cfg.frames_per_segment))
        segs.extend([seg] * cfg.frames_per_segment)
        current = ids[-1] + int(rng.integers(150, 600))
    return np.asarray(ids, dtype=np.int64), segs


def _head_poses(cfg: SyntheticConfig, sid: str, frame_ids: np.ndarray) -> np.ndarray:
    """Smooth head motion as a function of capture time: a few slow sinusoids per degree of freedom."""
    rng = subject_rng(cfg, sid, "head_pose")
    t = frame_ids.astype(np.float64)
    signals = np.zeros((len(t), 6))
    for k in range(6):
        period = rng.uniform(120.0, 900.0, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        weight = rng.uniform(0.5, 1.0, size=3)
        sig = np.sum(weight * np.sin(2 * np.pi * t[:, None] / period + phase), axis=1) / weight.sum()
        signals[:, k] = sig
    angles = np.deg2rad(np.array(POSE_AMPLITUDE_DEG)) * signals[:, :3]
    offsets = np.array(POSE_AMPLITUDE_MM) * signals[:, 3:]
    out = np.zeros((len(t), 4, 4))
    for f in range(len(t)):
        pitch = rotation_from_axis_angle(np.array([angles[f, 0], 0.0, 0.0]))
        yaw = rotation_from_axis_angle(np.array([0.0, angles[f, 1], 0.0]))
        roll = rotation_from_axis_angle(np.array([0.0, 0.0, angles[f, 2]]))
        out[f] = rigid(HEAD_BASE_ROTATION @ yaw @ pitch @ roll, HEAD_CENTRE_MM + offsets[f])
    return out


def _missing(cfg: SyntheticConfig, sid: str, n_cameras: int, n_frames: int) -> list[tuple[int, int]]:
    """Dropped (camera, frame) images: ~missing_fraction of all, at least min_missing, and never a frame's
    whole camera set or a camera's whole frame set (the real release drops isolated images)."""
    total = n_cameras * n_frames
    wanted = max(cfg.min_missing, int(np.floor(cfg.missing_fraction * total + 0.5)))
    rng = subject_rng(cfg, sid, "missing")
    per_frame = np.zeros(n_frames, dtype=int)
    per_cam = np.zeros(n_cameras, dtype=int)
    chosen: list[tuple[int, int]] = []
    for flat in rng.permutation(total):
        if len(chosen) == wanted:
            break
        cam, frame = divmod(int(flat), n_frames)
        if per_frame[frame] + 1 >= n_cameras or per_cam[cam] + 1 >= n_frames:
            continue
        per_frame[frame] += 1
        per_cam[cam] += 1
        chosen.append((cam, frame))
    if len(chosen) < wanted:
        raise ValueError(f"cannot drop {wanted} images from {n_cameras} cameras x {n_frames} frames")
    return sorted(chosen)


def build_timeline(cfg: SyntheticConfig, sid: str) -> Timeline:
    """Frames, head poses, blend weights, expression codes and dropped images of one capture."""
    frame_ids, segs = _frames(cfg, sid)
    weight_rng = subject_rng(cfg, sid, "expression")
    weights = np.concatenate([segment_weights(s, cfg.frames_per_segment, weight_rng) for s in cfg.segments])
    codes = encode_blend_weights(weights, subject_rng(cfg, sid, "codes"))
    return Timeline(
        frame_ids=frame_ids,
        segments=segs,
        head_to_world_mm=_head_poses(cfg, sid, frame_ids),
        weights=weights,
        codes=codes,
        missing=_missing(cfg, sid, cfg.n_cameras, len(frame_ids)),
    )

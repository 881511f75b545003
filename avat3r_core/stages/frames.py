"""Stage `frames`: which timesteps feed the inputs and which supervise.

Input timesteps are what DUSt3R and Sapiens run on, so their count sets most of the GPU cost of a run; the
paper's "10 timesteps in the segments EXP_eye_wide, EXP_tongue001 and EXP_jaw003" is ambiguous (10 per
segment, or 10 in total), so both readings are a config value and the choice is logged. Supervision
timesteps are a stride over the whole capture. The stage works from the capture index alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from avat3r_core import __version__
from avat3r_core.errors import CaptureError
from avat3r_core.seeds import derive_seed
from avat3r_core.store.atomic import write_json_atomic

log = logging.getLogger(__name__)


def spaced(frames: list[int], count: int, spacing: str, rng: np.random.Generator) -> list[int]:
    """`count` frames of `frames` (all of them if fewer), evenly spaced (ends included) or random."""
    if count >= len(frames):
        return list(frames)
    if spacing == "even":
        picks = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    elif spacing == "random":
        picks = np.sort(rng.choice(len(frames), size=count, replace=False))
    else:
        raise ValueError(f"unknown spacing {spacing!r}")
    return [frames[i] for i in picks]


def _usable_segments(
    segments: dict[str, list[int]], cfg: dict[str, Any], subject: str
) -> tuple[list[str], str]:
    """The segments inputs come from, after the missing-segment policy; and a note for the log."""
    wanted = list(cfg["input_segments"])
    missing = [name for name in wanted if not segments.get(name)]
    if not missing:
        return wanted, "all configured segments present"
    policy = cfg["missing_segment"]
    present = [name for name in wanted if segments.get(name)]
    if policy == "skip" and present:
        return present, f"skipped missing segments {missing}"
    if policy == "fallback":
        fallbacks = [name for name in cfg["fallback_segments"] if segments.get(name) and name not in present]
        if present or fallbacks:
            return present + fallbacks, f"missing segments {missing} replaced by {fallbacks}"
    if policy == "any":
        return sorted(segments), f"missing segments {missing}: using every frame of the capture"
    raise CaptureError(
        f"capture lacks the input segments {missing}; it has {sorted(segments)} (set frames.input_segments, "
        f"or frames.missing_segment={policy!r} -> skip, fallback or any for identity-only captures)",
        subject=subject,
    )


def select_frames(index: dict[str, Any], cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Input and supervision timesteps for one subject from its capture index and the `frames` config."""
    subject = index["subject"]
    without_mesh = set(index["frames_without_mesh"])
    segments: dict[str, list[int]] = {}
    for frame, segment in index["frames"]:
        if frame in without_mesh and cfg["missing_mesh"] == "error":
            raise CaptureError(
                "frame has no tracked mesh (config frames.missing_mesh=error)", subject=subject, frame=frame
            )
        if frame not in without_mesh:
            segments.setdefault(segment, []).append(frame)
    rng = np.random.default_rng(derive_seed(seed, subject, "frames"))
    chosen, policy_note = _usable_segments(segments, cfg, subject)
    inputs: list[tuple[int, str]] = []
    if cfg["input_count_per"] == "segment":
        for name in chosen:
            inputs += [
                (f, name) for f in spaced(segments[name], cfg["input_count"], cfg["input_spacing"], rng)
            ]
    else:
        pool = [(f, name) for name in chosen for f in segments[name]]
        picks = spaced(list(range(len(pool))), cfg["input_count"], cfg["input_spacing"], rng)
        inputs = [pool[i] for i in picks]
    supervision_segments = cfg["supervision_segments"] or list(segments)
    timeline = [
        f for f, segment in index["frames"] if segment in supervision_segments and f not in without_mesh
    ]
    supervision = timeline[:: cfg["supervision_stride"]]
    return {
        "subject": subject,
        "code_version": __version__,
        "input": [[frame, segment] for frame, segment in inputs],
        "supervision": supervision,
        "input_segments": chosen,
        "policy": policy_note,
        "skipped_without_mesh": sorted(without_mesh),
    }


def write_frames(index: dict[str, Any], cfg: dict[str, Any], seed: int, out: str | Path) -> dict[str, Any]:
    selection = select_frames(index, cfg, seed)
    write_json_atomic(out, selection)
    per = "per segment" if cfg["input_count_per"] == "segment" else "in total"
    log.info(
        "subject %s: %d input timesteps (%d %s, %s spacing, segments %s; %s); %d supervision timesteps "
        "(stride %d); %d frames skipped for a missing tracked mesh",
        selection["subject"],
        len(selection["input"]),
        cfg["input_count"],
        per,
        cfg["input_spacing"],
        ", ".join(selection["input_segments"]),
        selection["policy"],
        len(selection["supervision"]),
        cfg["supervision_stride"],
        len(selection["skipped_without_mesh"]),
    )
    return selection

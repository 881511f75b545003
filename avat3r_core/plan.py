"""`avat3r plan`: what a config will cost before it runs: jobs per stage and bytes per stage.

Sapiens-2B features alone are 64x64x1920 float16 values per input view, so a researcher should see the
totals for 256 subjects x 80 cameras before spending them. The numbers are computed from the config and a
capture description (subjects, cameras, frames, image size, share of front-facing cameras); stored sizes of
compressed arrays use ratios measured by the benchmarks on the synthetic capture, and are marked as estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avat3r_core.models.sapiens import sapiens_config

AVIF_BYTES_PER_PIXEL = 27_511 / 667**2  # benchmarks/supervision_storage.py, quality 90
PER_SUBJECT_STAGES = (
    "capture_index",
    "frames",
    "views",
    "matting",
    "crop",
    "positions",
    "features",
    "shards",
)


@dataclass(frozen=True)
class CaptureSize:
    """What the plan needs to know about a capture."""

    subjects: int
    cameras: int
    frames: int
    height: int
    width: int
    front_facing: float = 0.5  # share of cameras that may be inputs (Ava-256: ~40 of 80)
    segments_present: int = 3


def plan(config: dict[str, Any], size: CaptureSize) -> dict[str, Any]:
    """Jobs and raw bytes per stage for one subject and for the whole run."""
    frames_cfg, crop, features = config["frames"], config["crop"], config["features"]
    if frames_cfg["input_count_per"] == "segment":
        input_t = frames_cfg["input_count"] * size.segments_present
    else:
        input_t = frames_cfg["input_count"]
    supervision_t = -(-size.frames // frames_cfg["supervision_stride"])
    input_views = round(size.cameras * size.front_facing) * input_t
    supervision_views = size.cameras * supervision_t
    s, s2 = crop["input_size"], crop["supervision_size"]
    grid = s // 8
    channels = (
        features["tiny"]["embed_dim"]
        if not features["checkpoint"] or features["model"] == "tiny"
        else sapiens_config(features["model"])["embed_dim"]
    )
    supervision_px = s2 * s2 * (3 * AVIF_BYTES_PER_PIXEL if crop["supervision_codec"] == "avif" else 3)
    per_subject = {
        "matting": (input_views + supervision_views) * size.height * size.width,
        "crop": input_views * s * s * 4 + supervision_views * (supervision_px + s2 * s2),
        "positions": input_views * s * s * 4 * 4,
        "features": input_views * grid * grid * channels * 2,
    }
    return {
        "input_timesteps": input_t,
        "supervision_timesteps": supervision_t,
        "input_views_per_subject": input_views,
        "supervision_views_per_subject": supervision_views,
        "jobs": {**{stage: size.subjects for stage in PER_SUBJECT_STAGES}, "dataset_index": 1}
        | {"train": len(config["variants"]), "evaluate": len(config["variants"])}
        | ({"synthetic_capture": 1} if config["synthetic"]["enabled"] else {}),
        "bytes_per_subject": per_subject,
        "bytes_total": {stage: n * size.subjects for stage, n in per_subject.items()},
    }


def format_plan(result: dict[str, Any], size: CaptureSize) -> str:
    def human(n: float) -> str:
        for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
            if n < 1000:
                return f"{n:.1f} {unit}"
            n /= 1000
        return f"{n:.1f} EB"

    lines = [
        f"capture: {size.subjects} subjects x {size.cameras} cameras x {size.frames} frames, "
        f"{size.width}x{size.height} images, {size.front_facing:.0%} of cameras front-facing",
        f"per subject: {result['input_timesteps']} input timesteps, "
        f"{result['input_views_per_subject']} input views; "
        f"{result['supervision_timesteps']} supervision timesteps, "
        f"{result['supervision_views_per_subject']} supervision views",
        f"jobs: {sum(result['jobs'].values())} ("
        + ", ".join(f"{stage} {n}" for stage, n in result["jobs"].items())
        + ")",
        "bytes before compression (supervision crops: AVIF size measured on the synthetic capture):",
    ]
    for stage, n in result["bytes_per_subject"].items():
        lines.append(
            f"  {stage:10} {human(n):>10} per subject {human(result['bytes_total'][stage]):>10} in total"
        )
    total = sum(result["bytes_total"].values())
    lines.append(
        f"  {'all':10} {human(total / max(size.subjects, 1)):>10} per subject {human(total):>10} in total"
    )
    return "\n".join(lines)

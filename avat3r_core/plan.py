"""`avat3r plan`: what a config will cost before it runs: jobs, bytes and GPU hours per stage.

Sapiens-2B features alone are 64x64x1920 float16 values per input view, so a researcher should see the
totals for 256 subjects x 80 cameras before spending them. The numbers are computed from the config and a
capture description (subjects, cameras, frames, image size, share of front-facing cameras); stored sizes of
compressed arrays use ratios measured by the benchmarks on the synthetic capture, and are marked as estimates.

GPU hours come from the throughput constants below. None of them was measured on a GPU by this project (no
GPU has been lent to it): each names its source and the device it was measured on, and the printed plan
repeats the sources. They are estimates to the factor of two, meant to size an allocation, not to bill one.

The Snakefile prints this plan when a run starts (`onstart`), so this module imports no PyTorch: the
Snakemake process itself needs only the core package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avat3r_core.config import evaluated_models, trained_variants, variant_sections
from avat3r_core.models.sapiens_archs import PATCH_SIZE, SAPIENS_ARCHS, sapiens_arch_key

# Stored bytes per supervision pixel (all three channels) by crop.supervision_codec:
# benchmarks/supervision_storage.py, JPEG q95 4:4:4 and AVIF q90 4:4:4 per 667 px crop; zstd at raw size.
SUPERVISION_BYTES_PER_PIXEL = {"jpeg": 49_687 / 667**2, "avif": 27_511 / 667**2, "zstd": 3.0}
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


# -- GPU throughput: every constant with its source and device -----------------------------------------------
# Matting (matting.backend bgmv2): BackgroundMattingV2 "runs at 30fps at 4K and 60fps at HD on a modern GPU"
# (Lin et al., Real-Time High-Resolution Background Matting, CVPR 2021, abstract; their timings: an NVIDIA RTX
# 2080 Ti). Counted as 60 images/s for any image up to HD and pixel-proportionally above it (smaller images
# are not assumed faster: decoding and transfers dominate there).
BGMV2_IMAGES_PER_S = 60.0
BGMV2_REFERENCE_PIXELS = 1920 * 1080
BGMV2_SOURCE = "BGMv2 paper (CVPR 2021): 60 fps at HD, RTX 2080 Ti"
# DUSt3R pair forwards (positions.backend dust3r; ViT-L encoder, ViT-B decoders at 512x384): a MASt3R pair
# (the same backbone plus a matching head) takes ~198 ms on an NVIDIA A40 (Speedy MASt3R, arXiv 2503.10017,
# as quoted in shared/reference/dust3r_bgmv2.md). benchmarks/dust3r.py --released measured 0.09 pairs/s on
# this project's 2-core CPU, which no cluster would use.
DUST3R_PAIR_S = 0.198
DUST3R_PAIR_SOURCE = "MASt3R pair on an A40, 198 ms (Speedy MASt3R, arXiv 2503.10017)"
# DUSt3R global alignment (300 Adam iterations per input view, scaled by positions.dust3r.iterations): no
# GPU figure exists. Upper bound: the paper's whole avatar creation from 4 views (DUSt3R with alignment,
# Sapiens and the network: 12.3 s on an RTX 3090, Avat3r Table 4, benchmarks/runtime.py PAPER_TABLE4) less
# the 12 pair forwards above. (This 2-core CPU: 12.6 s per view, benchmarks/dust3r.py --released.)
PAPER_CREATION_S = 12.3
DUST3R_ALIGNMENT_S = PAPER_CREATION_S - 12 * DUST3R_PAIR_S
DUST3R_ALIGNMENT_ITERATIONS = 300
DUST3R_ALIGNMENT_SOURCE = "upper bound: Avat3r Table 4 creation (12.3 s, RTX 3090) less the pairs"
# Sapiens (features with a checkpoint): floating-point operations from the architecture (a ViT: per block
# 24*N*d^2 for the projections and MLP plus 4*N^2*d for attention, N tokens incl. CLS), run at an assumed
# 40% of an NVIDIA A100's 312 TFLOPS dense bf16 peak (A100 datasheet; the stage runs bf16 autocast on CUDA).
# The Sapiens model card's 8.709 TFLOPs for sapiens_2b at 1024^2 (shared/reference/sapiens_metrics.md) is
# the projections and MLP counted as multiply-adds; the formula gives 2 x 8.70 T for that part.
A100_BF16_FLOPS = 312e12
SAPIENS_UTILISATION = 0.4
SAPIENS_SOURCE = "FLOPs of the architecture at 40% of an A100's bf16 peak (not measured)"
# Training: the paper trained 3.5M steps with batch 1 on each of 8 A100s in about 4 days
# (shared/reference/model.md, which flags the figure as unverified: ~10 steps/s with ~1M Gaussians looks
# fast), i.e. 8 x 4 x 86400 / (3.5M x 8) A100-seconds per training sample.
PAPER_TRAIN_GPU_S_PER_SAMPLE = 8 * 4 * 86400 / (3.5e6 * 8)
TRAIN_SOURCE = "paper: 3.5M steps x 8 samples on 8 A100s in ~4 days (unverified)"


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
        else SAPIENS_ARCHS[sapiens_arch_key(features["model"])]["embed_dim"]
    )
    supervision_px = s2 * s2 * SUPERVISION_BYTES_PER_PIXEL[crop["supervision_codec"]]
    per_subject = {
        "matting": (input_views + supervision_views) * size.height * size.width,
        "crop": input_views * s * s * 4 + supervision_views * (supervision_px + s2 * s2),
        "positions": input_views * s * s * 4 * 4,
        "features": input_views * grid * grid * channels * 2,
    }
    gpu_hours, gpu_notes = _gpu_hours(config, size, input_views, supervision_views)
    trained, evaluated = trained_variants(config), evaluated_models(config)
    return {
        "input_timesteps": input_t,
        "supervision_timesteps": supervision_t,
        "input_views_per_subject": input_views,
        "supervision_views_per_subject": supervision_views,
        "jobs": {**{stage: size.subjects for stage in PER_SUBJECT_STAGES}, "dataset_index": 1}
        | {"train": len(trained), "protocol": 1, "evaluate": len(evaluated), "gather": int(bool(evaluated))}
        | ({"synthetic_capture": 1} if config["synthetic"]["enabled"] else {}),
        "bytes_per_subject": per_subject,
        "bytes_total": {stage: n * size.subjects for stage, n in per_subject.items()},
        "gpu_hours": gpu_hours,
        "gpu_notes": gpu_notes,
    }


def sapiens_flops(embed_dim: int, depth: int, image_size: int, patch: int = PATCH_SIZE) -> float:
    """Floating-point operations of one ViT forward at `image_size`^2 (multiply and add counted apart)."""
    tokens = (image_size // patch) ** 2 + 1
    return 2.0 * depth * (12 * tokens * embed_dim**2 + 2 * tokens**2 * embed_dim)


def _gpu_hours(
    config: dict[str, Any], size: CaptureSize, input_views: int, supervision_views: int
) -> tuple[dict[str, float], dict[str, str]]:
    """GPU hours per stage for the whole run (0 where the configured backend runs on the CPU)."""
    hours: dict[str, float] = {}
    notes: dict[str, str] = {}
    matting, positions, features = config["matting"], config["positions"], config["features"]
    if matting["backend"] == "bgmv2":
        images = (input_views + supervision_views) * size.subjects
        scale = max(1.0, size.height * size.width / BGMV2_REFERENCE_PIXELS)
        hours["matting"] = images * scale / BGMV2_IMAGES_PER_S / 3600
        notes["matting"] = f"{images:,} images; {BGMV2_SOURCE}"
    else:
        hours["matting"] = 0.0
        notes["matting"] = f"backend {matting['backend']}: CPU"
    if positions["backend"] == "dust3r":
        views = input_views * size.subjects
        n = config["views"]["n_partners"] + 1
        pairs = views * n * (n - 1)
        iterations = positions["dust3r"]["iterations"]
        hours["dust3r_pairs"] = pairs * DUST3R_PAIR_S / 3600
        notes["dust3r_pairs"] = f"{pairs:,} pairs ({n * (n - 1)} per input view); {DUST3R_PAIR_SOURCE}"
        hours["dust3r_alignment"] = (
            views * DUST3R_ALIGNMENT_S * iterations / DUST3R_ALIGNMENT_ITERATIONS / 3600
        )
        notes["dust3r_alignment"] = f"{views:,} views x {iterations} iterations; {DUST3R_ALIGNMENT_SOURCE}"
    else:
        hours["dust3r_pairs"] = hours["dust3r_alignment"] = 0.0
        notes["dust3r_pairs"] = notes["dust3r_alignment"] = f"backend {positions['backend']}: no DUSt3R"
    if features["checkpoint"] and features["model"] != "tiny":
        arch = SAPIENS_ARCHS[sapiens_arch_key(features["model"])]
        embed_dim, depth = arch["embed_dim"], arch["depth"]
        images = input_views * size.subjects
        flops = sapiens_flops(embed_dim, depth, features["input_size"])
        hours["sapiens"] = images * flops / (A100_BF16_FLOPS * SAPIENS_UTILISATION) / 3600
        notes["sapiens"] = f"{images:,} images x {flops / 1e12:.1f} TFLOP; {SAPIENS_SOURCE}"
    else:
        hours["sapiens"] = 0.0
        notes["sapiens"] = "no checkpoint: tiny random network on the CPU"
    samples = 0
    trained = trained_variants(config)
    for variant in trained:
        train = variant_sections(config, variant)["train"]
        samples += train["steps"] * train["batch_size"] * max(train["gpus"], 1)
    hours["train"] = samples * PAPER_TRAIN_GPU_S_PER_SAMPLE / 3600
    notes["train"] = (
        f"{samples:,} samples over {len(trained)} variant(s); {TRAIN_SOURCE}"
        if trained
        else "evaluation-only capture: nothing is trained"
    )
    return hours, notes


def capture_size(config: dict[str, Any]) -> tuple[CaptureSize, str]:
    """The size of the configured capture and where it came from, without decoding more than one image.

    Synthetic: from the config. A real capture: the subjects the config selects, and the cameras, frames
    and image size of the first of them (calibration and frame list; one image for the size, else the
    4TB release's 1024x667 is assumed and said so).
    """
    from avat3r_core.capture import subject_ids, synthetic_config

    if config["synthetic"]["enabled"]:
        from avat3r_core.capture.synthetic import image_size

        cfg = synthetic_config(config["synthetic"])
        height, width = image_size(cfg.downsample)
        frames = cfg.frames_per_segment * len(cfg.segments)
        size = CaptureSize(cfg.n_subjects, cfg.n_cameras, frames, height, width)
        return size, "synthetic capture (config)"
    from avat3r_core.capture import open_capture
    from avat3r_core.errors import Avat3rError

    subjects = subject_ids(config)
    if not subjects:
        return CaptureSize(0, 0, 0, 1024, 667), "capture without subjects"
    reader = open_capture(config["capture"], subjects[0])
    calibration = Path(reader.decoder) / "camera_calibration.json"
    cameras = len(json.loads(calibration.read_text())["KRT"])
    frames = len(reader.frames())
    source = f"{len(subjects)} subjects; cameras and frames of {subjects[0]}"
    try:
        height, width = reader.image_size()
    except Avat3rError:
        height, width = 1024, 667
        source += "; no image found, 1024x667 assumed"
    return CaptureSize(len(subjects), cameras, frames, height, width), source


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
    lines.append("GPU hours (estimates from published figures, none measured on a GPU by this project):")
    for stage, hours in result["gpu_hours"].items():
        lines.append(f"  {stage:16} {_hours(hours):>10}  {result['gpu_notes'][stage]}")
    lines.append(f"  {'all':16} {_hours(sum(result['gpu_hours'].values())):>10}")
    return "\n".join(lines)


def _hours(hours: float) -> str:
    if hours == 0:
        return "-"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.{0 if hours >= 100 else 1}f} h"


def plan_for_config(config: dict[str, Any]) -> str:
    """The plan of the configured capture as text, for the start of a run; never raises on a bad capture
    (the run's own jobs report that), it says why there is no plan instead."""
    from avat3r_core.errors import Avat3rError

    try:
        size, source = capture_size(config)
        return f"avat3r plan for this run ({source}):\n" + format_plan(plan(config, size), size)
    except (Avat3rError, OSError, ValueError, KeyError) as exc:
        return f"avat3r plan: not available for this capture ({type(exc).__name__}: {exc})"

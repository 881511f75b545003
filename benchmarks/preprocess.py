"""Matting + crop throughput against the floor of decoding and resizing the same AVIF images, in one run.

Generates a synthetic capture (Ava-256 layout; or reuses --capture DIR) and, in ONE process with ONE thread
for the AVIF decoder and for zarr's codec pool (--threads sets both; the floor runs with the same), times on
exactly the (camera, frame) images the stages touch:
  floor   decode each AVIF image and resize it to the input crop size (what any pipeline must do at least)
  stages  matting stage + crop stage end to end (decodes, matte, composite, crops, encodes, shard writes,
          checksums, manifests), each stage a fresh reader as in its own job
Floor and stages alternate --repeats times and the fastest of each counts. Times are CPU seconds of this
process (all its threads), so images/s are per core and other work on the machine does not inflate them;
wall seconds are printed beside. One more, instrumented run of the stages splits their CPU time into
components (exclusive: an encode inside a shard write counts as encode), and the overhead is also given
without the matte compute and without the codec encodes, so the cost of each can be read off. The matte's
IoU against the true alpha (synthetic capture) is printed last, from the stores of the timed runs.
--zstd-level, --avif-speed and --avif-subsampling try other codec settings for the image arrays (this script
only; the stores' defaults are codecs.IMAGE_ZSTD_LEVEL, AVIF_SPEED and 4:4:4).
Usage: python benchmarks/preprocess.py [--backend dataset] [--supervision-codec zstd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.AvifImagePlugin
import zarr
from PIL import Image

import avat3r_core.stages.crop as crop_stage
import avat3r_core.store.codecs as codecs
import avat3r_core.store.manifest as manifest
import avat3r_core.store.zarr_store as zarr_store
from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids
from avat3r_core.config import validate_sections
from avat3r_core.matting.backends import PlateDifferenceMatter
from avat3r_core.stages.capture_index import build_capture_index
from avat3r_core.stages.crop import run_crop
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.stages.matting import needed_images, run_matting
from avat3r_core.stages.views import select_views
from avat3r_core.store.codecs import SUBSAMPLINGS, AvifCodec, JpegCodec
from avat3r_core.store.zarr_store import open_store

# (label, owner, attribute): what the instrumented run times. Attributes missing in this version of the code
# are skipped (the breakdown then has fewer rows and more in "other").
COMPONENTS: list[tuple[str, Any, str]] = [
    ("decode images (AVIF)", Ava256Capture, "image"),
    ("decode masks (AVIF)", Ava256Capture, "mask"),
    ("matte compute", PlateDifferenceMatter, "__call__"),
    ("composite + cut crops", crop_stage, "_premultiplied_box"),
    ("composite + cut crops", crop_stage, "_cut"),
    ("composite + cut crops", crop_stage, "_cut_into"),
    ("read alpha back (crop stage)", getattr(crop_stage, "_MattingStore", None), "alpha_uint8"),
    ("read alpha back (crop stage)", getattr(crop_stage, "_MattingStore", None), "get"),
    ("encode zstd", zarr_store, "_zstd_encode"),
    ("encode AVIF", AvifCodec, "encode_pixels"),
    ("encode JPEG", JpegCodec, "encode_pixels"),
    ("checksums (sha256)", manifest, "stored_checksum"),
    ("checksums (sha256)", manifest, "array_checksum"),
    ("shard assembly + file writes", zarr_store, "_write_shards"),
]
CODEC_ENCODES = ("encode zstd", "encode AVIF", "encode JPEG")


class Breakdown:
    """Exclusive CPU time (time.thread_time, per thread) of the wrapped functions, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, label: str, owner: Any, name: str) -> None:
        original = getattr(owner, name, None) if owner is not None else None
        if original is None:
            return
        local, seconds = self._local, self.seconds

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # time spent in wrapped callees, subtracted from this call
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - start
                seconds[label] += elapsed - stack.pop()
                if stack:
                    stack[-1] += elapsed

        setattr(owner, name, timed)
        self._patched.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._patched.clear()


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downsample", type=int, default=4, help="4 = the 4TB release's 1024x667")
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames-per-segment", type=int, default=4)
    parser.add_argument("--backend", default="plate_difference", choices=["plate_difference", "dataset"])
    parser.add_argument("--supervision-codec", default="jpeg", choices=["jpeg", "avif", "zstd"])
    parser.add_argument("--supervision-quality", type=int, help="jpeg/avif quality (default 95 / 90)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating floor/stages runs; best counts")
    parser.add_argument("--threads", type=int, default=1, help="AVIF decoder and zarr codec pool threads")
    parser.add_argument("--capture", type=Path, help="reuse (or generate and keep) the capture here")
    parser.add_argument("--zstd-level", type=int, help=f"image arrays (default {codecs.IMAGE_ZSTD_LEVEL})")
    parser.add_argument(
        "--avif-speed", type=int, help=f"AVIF supervision crops (default {codecs.AVIF_SPEED})"
    )
    parser.add_argument(
        "--avif-subsampling", choices=SUBSAMPLINGS, help="AVIF supervision crops (default 4:4:4)"
    )
    args = parser.parse_args()
    if args.zstd_level is not None:
        codecs.IMAGE_ZSTD_LEVEL = args.zstd_level
    avif_options = {
        key: value
        for key, value in (("speed", args.avif_speed), ("subsampling", args.avif_subsampling))
        if value is not None
    }
    if avif_options:
        default_image_codecs = zarr_store.image_codecs

        def image_codecs(codec: str, quality: int = 90) -> tuple[Any, ...]:
            if codec == "avif":
                return (AvifCodec(quality=quality, **avif_options),)
            return default_image_codecs(codec, quality)

        zarr_store.image_codecs = image_codecs
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    PIL.AvifImagePlugin.DEFAULT_MAX_THREADS = args.threads  # default: every core, per decode
    zarr.config.set({"threading.max_workers": args.threads})

    with tempfile.TemporaryDirectory() as tmp:
        base = args.capture or Path(tmp)
        root, gt, out = base / "capture", base / "gt", Path(tmp) / "out"
        cfg = SyntheticConfig(
            n_subjects=1,
            n_cameras=args.cameras,
            frames_per_segment=args.frames_per_segment,
            downsample=args.downsample,
        )
        if not root.exists():
            generate_synthetic_capture(root, gt, cfg, workers=2, progress=False)
        subject = synthetic_subject_ids(cfg)[0]
        reader = Ava256Capture(root, subject)
        index = CaptureIndex(build_capture_index(reader))
        height, width = index.image_size
        crop_size = round(0.767616 * width)
        config = validate_sections(
            {
                "frames": {"supervision_stride": 2},
                "views": {},
                "matting": {"backend": args.backend},
                "crop": {
                    "input_size": crop_size,
                    "supervision_size": width,
                    "supervision_codec": args.supervision_codec,
                    "supervision_quality": args.supervision_quality
                    or (90 if args.supervision_codec == "avif" else 95),
                },
            }
        )
        frames = select_frames(index.data, config["frames"], seed=0)
        views = select_views(index, frames, config["views"], seed=0)
        todo = [(c, f) for c, fs in needed_images(index, frames, views).items() for f in fs]

        def floor() -> None:
            floor_reader = Ava256Capture(root, subject)
            for camera, frame in todo:
                image = Image.fromarray(floor_reader.image(camera, frame))
                image.resize((crop_size, crop_size), Image.BILINEAR)

        summary: dict[str, Any] = {}

        def stages() -> None:
            matting_reader = Ava256Capture(root, subject)  # fresh handles, as in separate jobs
            run_matting(
                matting_reader, index, frames, views, config["matting"], out / "matting.zarr", progress=False
            )
            crop_reader = Ava256Capture(root, subject)
            matting = out / "matting.zarr"
            summary.update(
                run_crop(
                    crop_reader,
                    index,
                    frames,
                    views,
                    matting,
                    config["crop"],
                    "src",
                    out / "crops.zarr",
                    progress=False,
                )
            )

        floors, runs = [], []
        for _ in range(args.repeats):
            floors.append(timed(floor))
            runs.append(timed(stages))
        breakdown = Breakdown()
        for label, owner, name in COMPONENTS:
            breakdown.wrap(label, owner, name)
        try:
            instrumented, _ = timed(stages)
        finally:
            breakdown.restore()
        ious = matte_ious(out / "matting.zarr", gt / subject) if (gt / subject).is_dir() else []

    n = len(todo)
    floor_cpu, floor_wall = min(floors)
    stage_cpu, stage_wall = min(runs)
    parts = dict(breakdown.seconds)
    matte = parts.get("matte compute", 0.0)
    encodes = {label: parts.get(label, 0.0) for label in CODEC_ENCODES}

    def overhead(seconds: float) -> str:
        return f"{100 * (seconds / floor_cpu - 1):.0f}%"

    quality = config["crop"]["supervision_quality"]
    print(
        f"backend {args.backend}, supervision codec {args.supervision_codec}"
        + (f" quality {quality}" if args.supervision_codec != "zstd" else "")
    )
    print(
        f"{n} images of {width}x{height} (W x H, downsample {args.downsample}) -> "
        f"{summary.get('input_crops')} input crops of {crop_size} px and {summary.get('supervision_crops')} "
        f"supervision crops of {width} px"
    )
    print(
        f"one process, {args.threads} thread(s) for AVIF decoding and zarr's codec pool, best of "
        f"{args.repeats}; CPU seconds of the process (img/s per core), wall seconds beside"
    )
    print(
        f"image arrays zstd level {codecs.IMAGE_ZSTD_LEVEL}"
        + (
            f"; AVIF speed {avif_options.get('speed', codecs.AVIF_SPEED)}, "
            f"subsampling {avif_options.get('subsampling', '4:4:4')}"
            if args.supervision_codec == "avif"
            else ""
        )
    )
    print(f"{'':30}{'CPU s':>8}{'ms/img':>9}{'img/s':>8}{'wall s':>9}")
    for name, (cpu, wall) in [
        ("floor: decode + resize", (floor_cpu, floor_wall)),
        ("matting + crop stages", (stage_cpu, stage_wall)),
    ]:
        print(f"{name:30}{cpu:8.2f}{cpu / n * 1e3:9.1f}{n / cpu:8.1f}{wall:9.2f}")
    print(f"stage overhead over the floor: {overhead(stage_cpu)} in all")
    if matte:
        print(f"  without the matte compute ({matte / n * 1e3:.1f} ms/img): {overhead(stage_cpu - matte)}")
    for label, seconds in encodes.items():
        if seconds:
            print(
                f"  without the {label[7:]} encode ({seconds / n * 1e3:.1f} ms/img): "
                f"{overhead(stage_cpu - seconds)}"
            )
    if sum(encodes.values()) and (matte or all(encodes.values())):
        print(
            f"  without the matte compute and every codec encode: "
            f"{overhead(stage_cpu - matte - sum(encodes.values()))}"
        )
    print("(components from the instrumented run, subtracted from the best run)")
    print(f"\nbreakdown of the stages, instrumented run ({instrumented:.2f} CPU s), CPU ms per image:")
    known = sum(parts.values())
    rows = sorted(parts.items(), key=lambda item: -item[1])
    rows.append(("other (Python, zip reads, buffers, small arrays)", instrumented - known))
    for label, seconds in rows:
        print(f"  {label:50}{seconds / n * 1e3:7.2f}{100 * seconds / instrumented:6.0f}%")
    print(f"  {'floor, for comparison':50}{floor_cpu / n * 1e3:7.2f}")
    if ious:
        print(
            f"\nmatte vs true alpha (> 127): IoU mean {np.mean(ious):.4f}, min {np.min(ious):.4f} "
            f"over {len(ious)} images"
        )


def matte_ious(store: Path, truth: Path) -> list[float]:
    """IoU (alpha > 127) of every valid stored alpha against the synthetic capture's true alpha."""
    group = open_store(store)
    frame_ids = [int(f) for f in np.load(truth / "head_pose.npz")["frame_ids"]]
    frames, valid = [int(f) for f in group["frames"][...]], group["valid"][...]
    ious = []
    for c, camera in enumerate(str(c) for c in group["camera_ids"][...]):
        true_alpha = np.load(truth / f"cam{camera}.npz")["alpha"]
        for t in np.flatnonzero(valid[c]):
            pred, true = group["alpha"][c, t] > 127, true_alpha[frame_ids.index(frames[t])] > 127
            union = np.count_nonzero(pred | true)
            ious.append(np.count_nonzero(pred & true) / union if union else 1.0)
    return ious


if __name__ == "__main__":
    main()

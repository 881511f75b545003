"""Matting + crop throughput against the floor of decoding and resizing the same AVIF images.

Generates a synthetic capture (Ava-256 layout), runs the matting and crop stages on one subject in this
process (one core), and times, on exactly the (camera, frame) images those stages touch:
  floor       decode each AVIF image and resize it to the crop size (what any pipeline must do at least)
  matte       the matting algorithm alone on the decoded images (plate_difference by default)
  stages      matting stage + crop stage end to end (decode, matte, composite, crop, Zarr writes, manifests)
and prints images/s per core and the stage overhead over the floor, with and without the matte compute.
Usage: python benchmarks/preprocess.py [--downsample 4] [--cameras 16] [--frames-per-segment 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids
from avat3r_core.config import validate_sections
from avat3r_core.matting.backends import make_matter, mask_to_alpha
from avat3r_core.stages.capture_index import build_capture_index
from avat3r_core.stages.crop import run_crop
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.stages.matting import needed_images, run_matting
from avat3r_core.stages.views import select_views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downsample", type=int, default=4, help="4 = the 4TB release's 1024x667")
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames-per-segment", type=int, default=4)
    parser.add_argument("--backend", default="plate_difference", choices=["plate_difference", "dataset"])
    parser.add_argument("--supervision-codec", default="avif", choices=["avif", "zstd"])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root, gt, out = Path(tmp) / "capture", Path(tmp) / "gt", Path(tmp) / "out"
        cfg = SyntheticConfig(
            n_subjects=1,
            n_cameras=args.cameras,
            frames_per_segment=args.frames_per_segment,
            downsample=args.downsample,
        )
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
                },
            }
        )
        frames = select_frames(index.data, config["frames"], seed=0)
        views = select_views(index, frames, config["views"], seed=0)
        todo = [(c, f) for c, fs in needed_images(index, frames, views).items() for f in fs]

        start = time.perf_counter()
        decoded = {}
        for camera, frame in todo:
            decoded[camera, frame] = reader.image(camera, frame)
            Image.fromarray(decoded[camera, frame]).resize((crop_size, crop_size), Image.BILINEAR)
        floor = time.perf_counter() - start

        start = time.perf_counter()
        if args.backend == "dataset":
            for camera, frame in todo:
                mask_to_alpha(reader.mask(camera, frame))
        else:
            matter = make_matter(args.backend, {})
            plates = {camera: reader.background(camera) for camera in index.camera_ids}
            for (camera, _), image in decoded.items():
                matter(image[None], plates[camera])
        matte = time.perf_counter() - start

        reader = Ava256Capture(root, subject)  # fresh handles: no warm caches from the floor run
        start = time.perf_counter()
        run_matting(reader, index, frames, views, config["matting"], out / "matting.zarr", progress=False)
        run_crop(
            reader,
            index,
            frames,
            views,
            out / "matting.zarr",
            config["crop"],
            "src",
            out / "crops.zarr",
            progress=False,
        )
        stages = time.perf_counter() - start

    n = len(todo)
    print(f"backend {args.backend}, supervision codec {args.supervision_codec}")
    print(
        f"{n} images of {width}x{height} (downsample {args.downsample}), "
        f"crops {crop_size} / {width} px, one process"
    )
    print(f"{'':28}{'s':>8}{'img/s':>9}")
    for name, seconds in [
        ("floor: decode + resize", floor),
        ("matte alone (or mask decode)", matte),
        ("matting + crop stages", stages),
    ]:
        print(f"{name:28}{seconds:8.2f}{n / seconds:9.1f}")
    print(
        f"stage overhead over the floor: {100 * (stages / floor - 1):.0f}% in all, "
        f"{100 * ((stages - matte) / floor - 1):.0f}% without the matte compute itself"
    )
    print(
        "(the stages decode each image twice, once to matte and once to crop; "
        f"matte {np.round(matte / n * 1e3, 1)} ms/img)"
    )


if __name__ == "__main__":
    main()

"""Time the synthetic capture generator on the reference configuration (3 subjects x 16 cameras x 60 frames).

The target is under 60 s on 2 cores at downsample 16, because the default CPU run and the end-to-end tests
generate this capture first.
Usage: ``python benchmarks/synthetic.py [--workers N] [--downsample D] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--cameras", type=int, default=16)
    parser.add_argument("--frames-per-segment", type=int, default=12)
    parser.add_argument("--downsample", type=int, default=16)
    parser.add_argument("--keep", type=Path, default=None, help="write here instead of a temporary folder")
    args = parser.parse_args()
    cfg = SyntheticConfig(
        n_subjects=args.subjects,
        n_cameras=args.cameras,
        frames_per_segment=args.frames_per_segment,
        downsample=args.downsample,
    )
    n_images = cfg.n_subjects * cfg.n_cameras * cfg.frames_per_segment * len(cfg.segments)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep if args.keep is not None else Path(tmp)
        start = time.perf_counter()
        generate_synthetic_capture(
            out / "capture", out / "groundtruth", cfg, workers=args.workers, progress=False
        )
        seconds = time.perf_counter() - start
    # Wall time only: the workers are children of the multiprocessing fork server, not of this process, so
    # their CPU time is not visible here.
    print(
        f"synthetic capture: {cfg.n_subjects} subjects x {cfg.n_cameras} cameras x "
        f"{n_images // (cfg.n_subjects * cfg.n_cameras)} frames at downsample {cfg.downsample}, "
        f"{args.workers} workers: {seconds:.1f} s wall, {n_images / seconds:.0f} images/s"
    )


if __name__ == "__main__":
    main()

"""Samples per second from the shards (DataLoader, 2 workers) against assembling them from the capture.

Both paths produce the same samples (`Avat3rShardDataset.draw`): 4 input views and 8 supervision views.
From the capture, each view means decoding the AVIF image and its shipped mask, cutting the stored crop
window and compositing on black; position maps and features cannot be assembled from the capture at all
without running DUSt3R and Sapiens again, so that path is a lower bound of its cost.
Run `make demo` first (it writes results/ and data/synthetic/). Usage:
python benchmarks/loader.py [--index INDEX] [--capture ROOT] [--samples 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.geometry.crops import CropWindow, cut_crop
from avat3r_core.matting.backends import mask_to_alpha
from avat3r_core.matting.composite import composite_on_black
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.store.zarr_store import open_store

_STATE: dict = {}


def _views(dataset: Avat3rShardDataset, i: int) -> list[tuple[str, str, int, np.ndarray]]:
    """(subject, camera, frame, window) of every view item i reads."""
    drawn = dataset.draw(i)
    subject = dataset.subjects[drawn["subject"]]
    crops = open_store(subject.stores["crops"])
    out = []
    for c, t in zip(drawn["cameras"], drawn["times"], strict=True):
        out.append(
            (
                subject.name,
                subject.input_cameras[c],
                int(subject.input_frames[t]),
                crops["input/window"][c, t],
            )
        )
    target = drawn["target"]
    for c in drawn["supervision"]:
        window = crops["supervision/window"][c, target]
        out.append(
            (subject.name, subject.supervision_cameras[c], int(subject.supervision_frames[target]), window)
        )
    return out


def _assemble(views: list[tuple[str, str, int, np.ndarray]]) -> int:
    for subject, camera, frame, (x0, y0, size, out_size) in views:
        reader = _STATE.setdefault(subject, Ava256Capture(_STATE["root"], subject))
        alpha = mask_to_alpha(reader.mask(camera, frame))
        window = CropWindow(int(x0), int(y0), int(size), int(out_size))
        cut_crop(composite_on_black(reader.image(camera, frame), alpha), window)
    return len(views)


def _init(root: str) -> None:
    _STATE["root"] = root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path("results/dataset_index.json"))
    parser.add_argument("--capture", type=Path, default=Path("data/synthetic/capture"))
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    dataset = Avat3rShardDataset(args.index, split=None, samples_per_epoch=args.samples, seed=0)
    loader = DataLoader(dataset, batch_size=1, num_workers=args.workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    shards = args.samples / (time.perf_counter() - start)

    plans = [_views(dataset, i) for i in range(args.samples)]
    with get_context("fork").Pool(args.workers, initializer=_init, initargs=(str(args.capture),)) as pool:
        start = time.perf_counter()
        pool.map(_assemble, plans)
        capture = args.samples / (time.perf_counter() - start)
    print(f"{args.samples} samples (4 input + up to 8 supervision views), {args.workers} workers")
    print(f"from the shards:                       {shards:7.1f} samples/s (everything training reads)")
    print(f"from the AVIF capture (images, masks): {capture:7.1f} samples/s (without positions or features)")


if __name__ == "__main__":
    main()

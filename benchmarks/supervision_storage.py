"""How should the 667x667 supervision crops be stored? Bytes, read time and quality of three options.

At Ava-256 scale (80 cameras x ~5000 frames per subject) raw uint8 supervision crops are
667 * 667 * 3 B * 400,000 = ~0.53 TB per subject, ~137 TB for 256 subjects. The options compared:

(a) raw uint8 crops in Zarr, zstd (lossless), one image per chunk, one shard per camera;
(b) JPEG crops in Zarr (the ``avat3r.jpeg`` codec, the default) at quality 95 / 90, and AVIF crops (the
    ``avat3r.avif`` codec) at quality 90 / 80, same chunking;
(c) only the crop windows (x0, y0, size) and the crop K in the store; crops are cut at load time from the
    capture's own AVIF images (decode the full 1024x667 image with PIL, cut) and matted with the alpha of the
    matting store, which the pipeline keeps anyway.

Crops are matted (background black, with the capture's foreground masks standing in for the matting stage)
because that is what training reads, and black background compresses very differently from a studio wall.
Windows follow the crop stage's rule (`supervision_window`: full image width, centred on the projected head).

Usage: ``python benchmarks/supervision_storage.py [--capture ROOT] [--json OUT]``; without ``--capture`` a
synthetic capture (1 subject, 8 cameras, 6 frames per segment, downsample 4 = the release's 1024x667) is
generated into a temporary folder first (~1 min on 2 cores). Timings are single-process, warm page cache.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids
from avat3r_core.geometry.crops import CropWindow, cut_crop, head_center, supervision_window
from avat3r_core.store.codecs import AvifCodec, JpegCodec
from avat3r_core.store.zarr_store import open_store, write_store

AVA256_IMAGES_PER_SUBJECT = 80 * 5000
SUPERVISION_SIZE = 667


@dataclass
class Result:
    """One row of the table."""

    option: str
    bytes_per_image: float
    read_ms: float
    encode_ms: float | None = None
    psnr_all: float | None = None
    psnr_fg: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tb_per_subject(self) -> float:
        return self.bytes_per_image * AVA256_IMAGES_PER_SUBJECT / 1e12


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    if where is not None:
        diff = diff[where]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def matte(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Background to black: round(rgb * alpha / 255), the compositing the crop stage does."""
    return ((image.astype(np.uint16) * alpha[..., None].astype(np.uint16) + 127) // 255).astype(np.uint8)


def load_supervision(reader: Ava256Capture) -> tuple[list[str], list[int], dict]:
    """Every (camera, frame) with an image: matted crops, windows, crop K, and the full-size alpha."""
    cameras = reader.camera_ids
    frames = [f.frame for f in reader.frames()]
    crops = np.zeros((len(cameras), len(frames), SUPERVISION_SIZE, SUPERVISION_SIZE, 3), np.uint8)
    alpha_full = np.zeros((len(cameras), len(frames), *reader.image_size()), np.uint8)
    windows = np.zeros((len(cameras), len(frames), 3), np.int32)
    intrinsics = np.zeros((len(cameras), len(frames), 3, 3), np.float32)
    valid = np.zeros((len(cameras), len(frames)), bool)
    for i, camera in enumerate(cameras):
        for j, frame in enumerate(frames):
            if not reader.has_image(camera, frame):
                continue
            camera_head = reader.head_centric_camera(camera, frame)
            window = supervision_window(
                camera_head, head_center(reader.tracked_mesh(frame)), out_size=SUPERVISION_SIZE
            )
            alpha = reader.mask(camera, frame)
            crops[i, j] = cut_crop(matte(reader.image(camera, frame), alpha), window)
            alpha_full[i, j] = alpha
            windows[i, j] = (window.x0, window.y0, window.size)
            intrinsics[i, j] = window.camera(camera_head).K
            valid[i, j] = True
    return (
        cameras,
        frames,
        {"crops": crops, "alpha": alpha_full, "windows": windows, "K": intrinsics, "valid": valid},
    )


def store_bytes(path: Path, array: str | None = None) -> int:
    root = path / array if array else path
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def time_per_call(calls: list[Callable[[], object]]) -> float:
    """Mean milliseconds of each call, run once each after one untimed warm-up."""
    calls[0]()
    start = time.perf_counter()
    for call in calls:
        call()
    return 1000.0 * (time.perf_counter() - start) / len(calls)


def bench_zarr_images(
    label: str, path: Path, data: dict, sample: list[tuple[int, int]], codec: str, quality: int = 90
) -> tuple[Result, np.ndarray]:
    crops, valid = data["crops"], data["valid"]
    start = time.perf_counter()
    with write_store(path, stage="bench", subject="bench", config={"codec": codec, "quality": quality}) as w:
        array = w.create_images("crops", crops.shape, codec=codec, quality=quality)
        for camera in range(crops.shape[0]):
            array[camera] = crops[camera]  # one shard (camera) per assignment
    encode_ms = 1000.0 * (time.perf_counter() - start) / int(valid.sum())
    stored = open_store(path)["crops"]
    read_ms = time_per_call([lambda c=c, t=t: stored[c, t] for c, t in sample])
    decoded = stored[...]
    foreground = np.broadcast_to((crops.max(axis=-1) > 0)[..., None], crops.shape)
    result = Result(
        label,
        bytes_per_image=store_bytes(path, "crops") / int(valid.sum()),
        read_ms=read_ms,
        encode_ms=encode_ms,
        psnr_all=psnr(decoded[valid], crops[valid]),
        psnr_fg=psnr(decoded, crops, foreground),
    )
    return result, decoded


def bench_windows(
    path: Path, reader: Ava256Capture, cameras: list[str], frames: list[int], data: dict, sample: list
) -> list[Result]:
    """Option (c): a store of windows + K, crops cut at load time from the capture's AVIF images."""
    with write_store(path, stage="bench", subject="bench", config={"option": "windows"}) as w:
        w.write_array("windows", data["windows"], attrs={"columns": ["x0", "y0", "size"]})
        w.write_array("K", data["K"])
        w.write_array("valid", data["valid"])
        alpha = w.create_images("alpha", data["alpha"].shape)
        for camera in range(len(cameras)):
            alpha[camera] = data["alpha"][camera]
    windows_bytes = sum(store_bytes(path, name) for name in ("windows", "K", "valid"))
    n_valid = int(data["valid"].sum())
    group = open_store(path)
    image_zip = reader.decoder / "image"
    archives = {camera: zipfile.ZipFile(image_zip / f"cam{camera}.zip") for camera in cameras}
    release_bytes = [
        archives[cameras[c]].getinfo(f"cam{cameras[c]}/{frames[t]:06d}.avif").compress_size
        for c, t in zip(*np.nonzero(data["valid"]), strict=True)
    ]

    def cut(c: int, t: int, with_alpha: bool) -> np.ndarray:
        x0, y0, size = (int(v) for v in group["windows"][c, t])
        raw = archives[cameras[c]].read(f"cam{cameras[c]}/{frames[t]:06d}.avif")
        with Image.open(io.BytesIO(raw)) as image:
            pixels = np.asarray(image.convert("RGB"))
        if with_alpha:
            pixels = matte(pixels, group["alpha"][c, t])
        return cut_crop(pixels, CropWindow(x0=x0, y0=y0, size=size, out_size=SUPERVISION_SIZE))

    # Correctness: with the alpha the load-time crop is exactly the stored raw crop.
    c0, t0 = sample[0]
    assert np.array_equal(cut(c0, t0, True), data["crops"][c0, t0])
    rows = [
        Result(
            "(c) windows+K, cut from capture AVIF",
            bytes_per_image=windows_bytes / n_valid,
            read_ms=time_per_call([lambda c=c, t=t: cut(c, t, False) for c, t in sample]),
            notes=["unmatted; lossless w.r.t. the release"],
        ),
        Result(
            "(c') same + matte with alpha (zstd)",
            bytes_per_image=(windows_bytes + store_bytes(path, "alpha")) / n_valid,
            read_ms=time_per_call([lambda c=c, t=t: cut(c, t, True) for c, t in sample]),
            notes=["alpha bytes counted; the matting store keeps it anyway"],
        ),
        Result(
            "release AVIF, full 1024x667 (reference)",
            bytes_per_image=float(np.mean(release_bytes)),
            read_ms=float("nan"),
            notes=["already on disk; not an extra cost"],
        ),
    ]
    for archive in archives.values():
        archive.close()
    return rows


def format_table(rows: list[Result]) -> str:
    header = (
        f"{'option':<42} {'bytes/img':>10} {'TB/subj':>8} {'read ms':>8} {'enc ms':>7} {'PSNR':>6} "
        f"{'PSNR fg':>7}"
    )
    lines = [header, "-" * len(header)]

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None or value != value else format(value, fmt)

    for row in rows:
        lines.append(
            f"{row.option:<42} {row.bytes_per_image:>10,.0f} {row.tb_per_subject:>8.3f} "
            f"{num(row.read_ms, '.1f'):>8} {num(row.encode_ms, '.0f'):>7} "
            f"{num(row.psnr_all, '.2f'):>6} {num(row.psnr_fg, '.2f'):>7}"
        )
    return "\n".join(lines)


def run(capture_root: Path, work: Path, read_sample: int, seed: int = 0) -> list[Result]:
    subject = synthetic_subject_ids(SyntheticConfig(n_subjects=1))[0]
    reader = Ava256Capture(capture_root, subject)
    start = time.perf_counter()
    cameras, frames, data = load_supervision(reader)
    valid = data["valid"]
    height, width = reader.image_size()
    print(
        f"{len(cameras)} cameras x {len(frames)} frames, {int(valid.sum())} supervision crops of "
        f"{SUPERVISION_SIZE}x{SUPERVISION_SIZE} from {height}x{width} images "
        f"(prepared in {time.perf_counter() - start:.0f} s)"
    )
    rng = np.random.default_rng(seed)
    pairs = [(int(c), int(t)) for c, t in zip(*np.nonzero(valid), strict=True)]
    sample = [pairs[i] for i in rng.choice(len(pairs), size=min(read_sample, len(pairs)), replace=False)]

    rows = [
        Result(
            "uncompressed uint8 (reference)",
            bytes_per_image=float(SUPERVISION_SIZE * SUPERVISION_SIZE * 3),
            read_ms=float("nan"),
            notes=["what the issue's ~0.5 TB/subject assumes"],
        )
    ]
    raw, _ = bench_zarr_images("(a) raw uint8, zstd, in Zarr", work / "a.zarr", data, sample, "zstd")
    rows.append(raw)
    for quality in (95, 90):
        row, _ = bench_zarr_images(
            f"(b) JPEG q{quality} 4:4:4, in Zarr", work / f"j{quality}.zarr", data, sample, "jpeg", quality
        )
        rows.append(row)
    for quality in (90, 80):
        row, _ = bench_zarr_images(
            f"(b) AVIF q{quality} 4:4:4, in Zarr", work / f"b{quality}.zarr", data, sample, "avif", quality
        )
        rows.append(row)
    rows.extend(bench_windows(work / "c.zarr", reader, cameras, frames, data, sample))
    # Determinism on real content: same crop, same bytes.
    c0, t0 = sample[0]
    for codec in (JpegCodec(quality=95), AvifCodec(quality=90)):
        assert len({codec.encode_pixels(data["crops"][c0, t0]) for _ in range(2)}) == 1
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capture", type=Path, default=None, help="existing synthetic capture root")
    parser.add_argument("--read-sample", type=int, default=48, help="images timed per option")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        capture = args.capture
        if capture is None:
            capture = work / "capture"
            config = SyntheticConfig(n_subjects=1, n_cameras=8, frames_per_segment=6, downsample=4)
            start = time.perf_counter()
            generate_synthetic_capture(capture, work / "groundtruth", config, workers=2, progress=False)
            print(f"synthetic capture generated in {time.perf_counter() - start:.0f} s")
        rows = run(capture, work, args.read_sample)
    print()
    print(format_table(rows))
    print(
        f"\nTB/subj extrapolates bytes/img to {AVA256_IMAGES_PER_SUBJECT:,} images (80 cameras x 5000 "
        "frames). "
        "PSNR is vs (a) over all pixels and over foreground pixels; enc ms is the write cost per image."
    )
    for row in rows:
        for note in row.notes:
            print(f"  {row.option}: {note}")
    if args.json:
        args.json.write_text(
            json.dumps([row.__dict__ | {"tb_per_subject": row.tb_per_subject} for row in rows], indent=1)
        )


if __name__ == "__main__":
    main()

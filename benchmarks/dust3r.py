"""DUSt3R cost: pairs per second and global-alignment time per view, plus the Ava-256 job arithmetic.

Measures, on this machine, (1) a tiny random DUSt3R at 128x96 and (2) the released configuration (ViT-L
encoder, ViT-B decoders, DPT heads; random weights, same cost) at 512x384, on the GPU when one is present
(else a single pair on the CPU, which is slow), and the alignment of 4 views (12 pairs). Then it prints the
job count and hours of the paper's partner-view scheme for an Ava-256-sized config against running DUSt3R on
every 4-camera combination of the input cameras.
Usage: python benchmarks/dust3r.py [--released] [--iterations 300]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch

from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.models.dust3r.alignment import align_known_cameras
from avat3r_core.models.dust3r.checkpoint import random_dust3r
from avat3r_core.models.dust3r.inference import predict_pairs

RELEASED = {
    "img_size": (512, 512),
    "head_type": "dpt",
    "enc_embed_dim": 1024,
    "enc_depth": 24,
    "enc_num_heads": 16,
    "dec_embed_dim": 768,
    "dec_depth": 12,
    "dec_num_heads": 12,
}


def time_pairs(model: torch.nn.Module, height: int, width: int, n_pairs: int, device: str) -> float:
    images = torch.rand(4, 3, height, width, device=device) * 2 - 1
    pairs = list(itertools.permutations(range(4), 2))[:n_pairs]
    predict_pairs(model, images, pairs[:1], batch_size=1)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    predictions = predict_pairs(model, images, pairs, batch_size=len(pairs))
    if device == "cuda":
        torch.cuda.synchronize()
    return n_pairs / (time.perf_counter() - start), predictions


def cameras(height: int, width: int) -> list[Camera]:
    K = np.array([[1.2 * width, 0, width / 2], [0, 1.2 * width, height / 2], [0, 0, 1]])
    eyes = [(0, 0, 1), (0.4, 0, 0.9), (-0.4, 0.1, 0.9), (0, 0.4, 0.9)]
    return [
        Camera(K, look_at_w2c(np.array(e), np.zeros(3), np.array([0, 1.0, 0])), width, height) for e in eyes
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--released", action="store_true", help="also time the released ViT-L configuration")
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}")
    configs = [("tiny random", {}, 128, 96, 12)]
    if args.released:
        configs.append(("released size (ViT-L/B, DPT)", RELEASED, 512, 384, 12 if device == "cuda" else 1))
    for label, kwargs, height, width, n_pairs in configs:
        model = random_dust3r(0, **kwargs)[0].to(device).eval()
        rate, _ = time_pairs(model, height, width, n_pairs, device)
        print(f"{label:32} {height}x{width}: {rate:8.2f} pairs/s ({n_pairs} pairs timed)")
        del model
    # Alignment cost: 4 views, 12 pairs, at the released resolution, fed with synthetic predictions.
    for height, width in [(128, 96), (512, 384)]:
        pairs = list(itertools.permutations(range(4), 2))
        rng = np.random.default_rng(0)
        pts = rng.normal(size=(12, height, width, 3)).astype(np.float32) * 0.05 + [0, 0, 1]
        predictions = {
            "pts3d_1": pts,
            "conf_1": np.full((12, height, width), 2.0, np.float32),
            "pts3d_2_in_1": pts,
            "conf_2": np.full((12, height, width), 2.0, np.float32),
        }
        start = time.perf_counter()
        align_known_cameras(
            predictions, pairs, cameras(height, width), iterations=args.iterations, device=device
        )
        seconds = time.perf_counter() - start
        print(f"alignment {height}x{width}, {args.iterations} iterations: {seconds / 4:.2f} s per view")

    # Job arithmetic for an Ava-256-sized config: 80 cameras, ~40 front-facing, 30 input timesteps.
    subjects, input_cameras, timesteps = 256, 40, 30
    partner_runs = subjects * input_cameras * timesteps
    combos = subjects * math.comb(input_cameras, 4) * timesteps
    print(
        f"partner-view scheme: {partner_runs:,} DUSt3R runs of 12 pairs ({subjects} jobs, one per subject); "
        f"every 4-camera combination: {combos:,} runs ({combos / partner_runs:,.0f}x more)"
    )


if __name__ == "__main__":
    main()

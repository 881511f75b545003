"""Avatar creation time and driving speed: the quantities of the paper's Table 4, on this machine.

Creation is split into (a) DUSt3R on the input views with global alignment to the known cameras
(`positions_for_views`: 12 ordered pairs for 4 views; 1 view is the pair of the image with itself and needs
no alignment), (b) Sapiens features of the input crops and (c) the network's encode (everything before the
cross-attention, `build_avatar`). Driving is decode + splatting of one frame per expression, expressions in
batches, from the cached encoding (`render_sequence`), as frames per second.

Configs: `tiny` (128 px inputs, 167 px frames, tiny random DUSt3R at 128x96 and tiny random Sapiens at 256 px;
the CPU demo) and `paper` (512 px inputs, 667 px frames, DUSt3R of the released ViT-L/ViT-B/DPT size at
512x384 and Sapiens-2B at 1024 px, both with random weights: same cost). Inputs are the synthetic batch of
`benchmarks/train_step.py` (a sphere "head" seen from a ring of cameras), so nothing needs a dataset.
`paper` runs when CUDA is available (default there: both); on the CPU, `--released` adds the released-size
DUSt3R alone (minutes). Every number is printed with the device that produced it.
Usage: python benchmarks/runtime.py [--config tiny|paper|both] [--device cpu|cuda] [--released]
       [--frames 16] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

# benchmarks/ is the script's folder, hence first on sys.path: dust3r is benchmarks/dust3r.py.
from dust3r import RELEASED
from train_step import SIZES, ring_cameras, synthetic_batch

from avat3r_core.models.dust3r.checkpoint import random_dust3r
from avat3r_core.models.dust3r.inference import predict_pairs
from avat3r_core.models.sapiens import (
    SapiensFeatures,
    _TimmFeatures,
    build_sapiens,
    load_sapiens,
    write_random_sapiens,
)
from avat3r_core.positions.dust3r import dust3r_window, positions_for_views
from avat3r_core.recon.animate import build_avatar, render_sequence
from avat3r_core.recon.model import Avat3rModel, ModelConfig
from avat3r_core.recon.predict import scene_gaussians
from avat3r_core.render import select_backend

PAPER_TABLE4 = [  # Avat3r's Table 4 (their numbers, one RTX 3090): views, creation s, driving fps
    (4, 12.3, 7.9),
    (1, 1.15, 53.0),
]
TINY_SAPIENS = {"embed_dim": 64, "depth": 2, "num_heads": 4}  # config.yaml features.tiny
SETUP = {  # DUSt3R kwargs and resolution, Sapiens sizes and input size
    "tiny": ({}, 128, TINY_SAPIENS, 256),
    "paper": (RELEASED, 512, "sapiens_2b", 1024),
}
ALIGNMENT = {"window": "portrait", "batch_size": 12, "iterations": 300, "lr": 0.01}  # config.yaml positions


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def input_views(
    kind: str, views: int, cfg: ModelConfig, device: torch.device
) -> tuple[dict, np.ndarray, list]:
    """The synthetic batch cut to ``views`` inputs, its crops as uint8 and the input cameras."""
    batch = synthetic_batch(kind, cfg, device)
    for key in ("input_rgb", "plucker", "position", "confidence", "features", "input_K", "input_w2c"):
        batch[key] = batch[key][:, :views]
    crops = (batch["input_rgb"][0].permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    cameras = ring_cameras(SIZES[kind][2], SIZES[kind][0], 0.0)[:views]
    return batch, crops, cameras


def dust3r_seconds(
    kwargs: dict,
    resolution: int,
    crops: np.ndarray,
    cameras: list,
    device: torch.device,
    repeats: int,
    warmup: bool = True,
) -> float:
    model = random_dust3r(0, **kwargs)[0].to(device).eval()
    cfg = dict(ALIGNMENT, resolution=resolution)
    if len(crops) > 1:

        def run() -> None:
            positions_for_views(model, list(crops), cameras, cfg, device=device.type)

    else:  # one view: DUSt3R on the image paired with itself; the pointmap is the view's own, no alignment
        _, _, height, width = dust3r_window(crops.shape[1], cfg)
        image = torch.rand(1, 3, height, width, device=device) * 2 - 1

        def run() -> None:
            predict_pairs(model, image, [(0, 0)], batch_size=1)

    return timed(run, device, repeats, warmup)  # the model is freed on return (GPU memory)


def sapiens_extractor(sizes: str | dict, input_size: int, device: torch.device) -> SapiensFeatures:
    if isinstance(sizes, dict):  # tiny: the features stage's own path (a random file, loaded back)
        with tempfile.TemporaryDirectory() as folder:
            path = write_random_sapiens(Path(folder) / "tiny_random_clean.pth", sizes, seed=0)
            return load_sapiens(path, sizes, device=device, input_size=input_size)
    with torch.device(device):  # 2B: built in place on the device (an 8 GB random file would only cost time)
        network = _TimmFeatures(build_sapiens(sizes, img_size=input_size))
    return SapiensFeatures(
        network, input_size=(input_size, input_size), device=device, description=sizes, random_weights=True
    )


def sapiens_seconds(
    sizes: str | dict, input_size: int, crops: np.ndarray, device: torch.device, repeats: int
) -> float:
    extractor = sapiens_extractor(sizes, input_size, device)
    return timed(lambda: extractor(crops), device, repeats)


def bench(kind: str, views: int, device: torch.device, args: argparse.Namespace) -> dict:
    cfg = ModelConfig.tiny() if kind == "tiny" else ModelConfig.paper()
    dust3r_kwargs, resolution, sapiens_sizes, sapiens_size = SETUP[kind]
    batch, crops, cameras = input_views(kind, views, cfg, device)
    repeats = args.repeats
    out = {"config": kind, "views": views, "device": device_name(device)}
    out["dust3r_s"] = dust3r_seconds(dust3r_kwargs, resolution, crops, cameras, device, repeats)
    out["sapiens_s"] = sapiens_seconds(sapiens_sizes, sapiens_size, crops, device, repeats)
    model = Avat3rModel(cfg).to(device).eval()
    out["network_s"] = timed(lambda: build_avatar(model, batch), device, repeats)
    out["create_s"] = out["dust3r_s"] + out["sapiens_s"] + out["network_s"]

    avatar = build_avatar(model, batch)
    codes = torch.randn(args.frames, cfg.expression_dim, generator=torch.Generator().manual_seed(0))
    size = batch["target_rgb"].shape[-1]
    camera = (batch["target_K"][0, :1], batch["target_w2c"][0, :1], size)

    def run() -> None:
        for _ in render_sequence(avatar, codes, camera, batch=args.batch, backend=args.renderer):
            pass

    out["fps"] = args.frames / timed(run, device, max(1, repeats // 2))
    with torch.no_grad():
        scene = scene_gaussians(avatar.model.decode(avatar.cache, codes[:1].to(device)), 0)
    out["gaussians"] = int(scene.means.shape[0])
    out["renderer"] = select_backend(scene, args.renderer)
    out["frame"] = size
    out["parameters"] = model.num_parameters()
    return out


def released_dust3r_cpu() -> dict:
    """One cold run (no warm-up: it takes minutes) of the released-size DUSt3R + alignment on the CPU."""
    device = torch.device("cpu")
    _, crops, cameras = input_views("paper", 4, ModelConfig.paper(), device)
    seconds = dust3r_seconds(RELEASED, 512, crops, cameras, device, 1, warmup=False)
    return {"device": device_name(device), "dust3r_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--config", default="both" if cuda else "tiny", choices=["tiny", "paper", "both"])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--views", default="4,1", help="comma-separated input view counts (Table 4: 4 and 1)")
    parser.add_argument("--frames", type=int, default=16, help="expressions driven per timing")
    parser.add_argument("--batch", type=int, default=8, help="expressions decoded at once")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per number (median), after a warm-up"
    )
    parser.add_argument("--renderer", default="auto", choices=["auto", "torch", "gsplat"])
    parser.add_argument(
        "--released", action="store_true", help="on the CPU: also time DUSt3R of the released size (minutes)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    kinds = ["tiny", "paper"] if args.config == "both" else [args.config]
    if "paper" in kinds and device.type != "cuda":
        print("note: the paper config on the CPU takes many minutes per number (Sapiens-2B at 1024 px alone)")
    views = [int(v) for v in args.views.split(",")]
    rows = []
    for kind in kinds:
        for v in views:
            r = bench(kind, v, device, args)
            rows.append(r)
            print(
                f"[{r['device']}] {kind}, {v} view(s): DUSt3R + alignment {r['dust3r_s']:.3f} s, "
                f"Sapiens {r['sapiens_s']:.3f} s, network encode {r['network_s']:.3f} s -> creation "
                f"{r['create_s']:.3f} s; driving {r['fps']:.1f} fps ({r['gaussians']:,} Gaussians into "
                f"{r['frame']}x{r['frame']}, {r['renderer']} renderer, batch {args.batch})",
                flush=True,
            )
    if args.released and device.type == "cpu":
        r = released_dust3r_cpu()
        print(
            f"[{r['device']}] DUSt3R released size (random weights), 4 views at 512x384 + alignment: "
            f"{r['dust3r_s']:.1f} s"
        )

    print()
    print(
        "| views | config | device | DUSt3R + alignment (s) | Sapiens (s) | network (s) | creation (s) "
        "| driving (fps) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['views']} | {r['config']} (this implementation, random weights) | {r['device']} | "
            f"{r['dust3r_s']:.3f} | {r['sapiens_s']:.3f} | {r['network_s']:.3f} | {r['create_s']:.2f} | "
            f"{r['fps']:.1f} |"
        )
    for v, create, fps in PAPER_TABLE4:
        print(f"| {v} | paper's Table 4 (Avat3r) | NVIDIA RTX 3090 | - | - | - | {create} | {fps} |")


if __name__ == "__main__":
    main()

"""Seconds per training step, peak memory, and the rasteriser's share, for the tiny and the paper config.

The batch is synthetic but shaped and placed like a real one: V input and N supervision cameras on a ring
1.1 m around a 10 cm sphere "head", position maps from ray-sphere intersection (confidence 1 on the
sphere), smooth random colours and features. A step is the full `Trainer.train_step` maths: network
forward (bf16 autocast on GPU), splatting every supervision view, L1 + SSIM loss, backward, Adam. The
rasteriser's share is timed separately on the same Gaussians (forward + backward of `render` alone).
Usage: python benchmarks/train_step.py [--config tiny|paper|both] [--steps 5] [--device cpu|cuda]
(`paper` needs a GPU: about 1M Gaussians rendered into 8 views of 667x667 per step.)
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from contextlib import nullcontext

import numpy as np
import torch

from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.rays import plucker_rays
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.recon.losses import LossWeights, PhotometricLoss
from avat3r_core.recon.model import Avat3rModel, ModelConfig
from avat3r_core.recon.predict import render_supervision, scene_gaussians
from avat3r_core.render import render

SIZES = {  # input crop, supervision crop, views, supervision views
    "tiny": (128, 167, 4, 4),
    "paper": (512, 667, 4, 8),
}


def ring_cameras(n: int, size: int, offset: float) -> list[Camera]:
    focal = size / (2 * np.tan(np.radians(8.5)))  # ~17 degree field of view: the head fills the crop
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    angles = offset + np.linspace(-0.9, 0.9, n)
    centers = [1.1 * np.array([np.sin(a), 0.05 * np.cos(3 * a), np.cos(a)]) for a in angles]
    # World -y shows upwards in the image, as in the capture's head frame.
    return [
        Camera(K=K, w2c=look_at_w2c(c, np.zeros(3), [0.0, -1.0, 0.0]), width=size, height=size)
        for c in centers
    ]


def sphere_hits(camera: Camera, radius: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Points (H, W, 3) where pixel rays hit the sphere, and the hit mask (H, W)."""
    plucker = plucker_rays(camera)
    direction = plucker[..., 3:]
    origin = np.broadcast_to(camera.center, direction.shape)
    b = (origin * direction).sum(-1)
    disc = b**2 - ((origin**2).sum(-1) - radius**2)
    hit = disc > 0
    t = -b - np.sqrt(np.clip(disc, 0, None))
    return origin + t[..., None] * direction, hit


def synthetic_batch(kind: str, cfg: ModelConfig, device: torch.device) -> dict:
    s_in, s_out, v, n = SIZES[kind]
    rng = np.random.default_rng(0)
    inputs, targets = ring_cameras(v, s_in, 0.0), ring_cameras(n, s_out, 0.07)
    points, hits = zip(*(sphere_hits(c) for c in inputs), strict=True)
    smooth = torch.nn.functional.interpolate(torch.rand(v, 3, 8, 8), size=(s_in, s_in), mode="bilinear")
    grid = s_in // cfg.patch_size

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    batch = {
        "input_rgb": smooth * t(np.stack(hits))[:, None],
        "plucker": t(np.stack([plucker_rays(c).transpose(2, 0, 1) for c in inputs])),
        "position": t(np.stack(points)).permute(0, 3, 1, 2),
        "confidence": t(np.stack(hits))[:, None],
        "features": t(rng.standard_normal((v, cfg.feature_dim, grid, grid))),
        "input_K": t(np.stack([c.K for c in inputs])),
        "input_w2c": t(np.stack([c.w2c for c in inputs])),
        "target_rgb": torch.rand(n, 3, s_out, s_out),
        "target_alpha": torch.ones(n, 1, s_out, s_out),
        "target_K": t(np.stack([c.K for c in targets])),
        "target_w2c": t(np.stack([c.w2c for c in targets])),
        "target_valid": torch.ones(n, dtype=torch.bool),
        "expression": t(rng.standard_normal(256)),
    }
    return {k: x[None].to(device) for k, x in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(kind: str, device: torch.device, steps: int) -> dict:
    cfg = ModelConfig.tiny() if kind == "tiny" else ModelConfig.paper()
    model = Avat3rModel(cfg).to(device)
    model.set_gradient_checkpointing(device.type == "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = PhotometricLoss(LossWeights(lpips=0.0))
    batch = synthetic_batch(kind, cfg, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, render_times, gaussians = [], [], 0
    for i in range(steps + 1):  # the first step warms up (allocations, kernel selection)
        sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            maps = model(batch)
        out = render_supervision(maps, batch, 0)
        loss = loss_fn(out.pred, out.target, step=0)["total"]
        loss.backward()
        optimizer.step()
        sync(device)
        if i:
            step_times.append(time.perf_counter() - start)
        # The rasteriser alone on the same Gaussians: forward + backward.
        scene = scene_gaussians(maps, 0)
        leaves = {
            k: getattr(scene, k).detach().requires_grad_() for k in ("means", "scales", "opacities", "colors")
        }
        scene = type(scene)(quats=scene.quats.detach(), **leaves)
        sync(device)
        start = time.perf_counter()
        rgb = render(
            scene, batch["target_K"][0], batch["target_w2c"][0], out.pred.shape[-1], out.pred.shape[-2]
        ).rgb
        rgb.sum().backward()
        sync(device)
        if i:
            render_times.append(time.perf_counter() - start)
        gaussians = out.n_gaussians
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    step, rast = float(np.median(step_times)), float(np.median(render_times))
    return {
        "config": kind,
        "parameters": model.num_parameters(),
        "gaussians": gaussians,
        "step_s": step,
        "render_s": rast,
        "render_share": rast / step,
        "peak_gib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=["tiny", "paper", "both"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    kinds = ["tiny", "paper"] if args.config == "both" else [args.config]
    memory = "peak GPU memory (GiB)" if device.type == "cuda" else "peak RSS (GiB)"
    print(f"| config | parameters | Gaussians | s / step | rasteriser s (fwd+bwd) | share | {memory} |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        r = bench(kind, device, args.steps)
        print(
            f"| {r['config']} | {r['parameters']:,} | {r['gaussians']:,} | {r['step_s']:.3f} | "
            f"{r['render_s']:.3f} | {r['render_share']:.0%} | {r['peak_gib']:.2f} |"
        )


if __name__ == "__main__":
    main()

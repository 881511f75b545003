"""Time forward and backward of the Gaussian splatting backends for (Gaussians, image size, splat sigma).

The torch backend's cost is proportional to the number of (Gaussian, pixel) pairs, roughly
N x (2 x 3.3 sigma)² for Gaussians of projected standard deviation sigma pixels, so the table reports the
pair count next to the times. Each configuration runs in a fresh process, so that its peak RSS is its own.
With CUDA, the torch backend on the GPU and gsplat (if installed) are timed too.
Usage: ``python benchmarks/render.py [--config N:SIZE:SIGMA ...] [--repeats R] [--threads T]``
(default: 20000:128:1.5 20000:128:4 100000:256:1.5, about 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch

from avat3r_core.render import Gaussians, gsplat_unavailable_reason, render

DEFAULT_CONFIGS = ("20000:128:1.5", "20000:128:4", "100000:256:1.5")


def make_scene(
    n: int, size: int, sigma_px: float, device: str, seed: int = 0
) -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
    """n Gaussians over the view of a size x size camera, depth 2.5-3.5, projected sigma about sigma_px."""
    gen = torch.Generator().manual_seed(seed)
    focal = float(size)
    z = 2.5 + torch.rand(n, generator=gen)
    uv = torch.rand(n, 2, generator=gen) * size
    means = torch.stack([(uv[:, 0] - size / 2) * z / focal, (uv[:, 1] - size / 2) * z / focal, z], dim=-1)
    scales = (sigma_px * z / focal)[:, None] * (0.7 + 0.6 * torch.rand(n, 3, generator=gen))
    fields = [
        means,
        torch.randn(n, 4, generator=gen),
        scales,
        0.1 + 0.9 * torch.rand(n, generator=gen),
        torch.rand(n, 3, generator=gen),
    ]
    gaussians = Gaussians(*(f.to(device).requires_grad_() for f in fields))
    K = torch.tensor([[[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]], device=device)
    return gaussians, K, torch.eye(4, device=device)[None]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_config(config: str, backend: str, device: str, repeats: int, threads: int) -> dict:
    """Best-of-repeats forward and backward seconds, pairs and peak memory of one configuration."""
    torch.set_num_threads(threads)
    n, size, sigma = config.split(":")
    gaussians, K, w2c = make_scene(int(n), int(size), float(sigma), device)
    base = _memory_gib(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    forward, backward, pairs = [], [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = render(gaussians, K, w2c, int(size), int(size), backend=backend)
        _sync(device)
        middle = time.perf_counter()
        (out.rgb.sum() + out.alpha.sum()).backward()
        _sync(device)
        forward.append(middle - start)
        backward.append(time.perf_counter() - middle)
        pairs = out.pairs
        for field in Gaussians.__dataclass_fields__:
            getattr(gaussians, field).grad = None
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _memory_gib(device)
    return {"pairs": pairs, "forward": min(forward), "backward": min(backward), "peak": peak, "base": base}


def _memory_gib(device: str) -> float:
    """GPU memory allocated now, or this process's peak RSS so far."""
    if device == "cuda":
        return torch.cuda.memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=list(DEFAULT_CONFIGS), help="N:SIZE:SIGMA_PX ...")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is shown")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--no-cpu", action="store_true", help="only the CUDA rows")
    args = parser.parse_args()

    runs = [] if args.no_cpu else [("torch", "cpu")]
    print(f"torch {torch.__version__}; CPU: {_cpu_name()}, {args.threads} threads")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        runs.append(("torch", "cuda"))
        reason = gsplat_unavailable_reason(torch.device("cuda"))
        if reason is None:
            runs.append(("gsplat", "cuda"))
        else:
            print(f"gsplat skipped: {reason}")
    else:
        print("GPU: none (torch.cuda.is_available() is False); gsplat skipped")

    header = f"{'backend':8} {'device':6} {'gaussians':>9} {'image':>9} {'sigma_px':>8} {'pairs':>11}"
    print(f"{header} {'forward_s':>9} {'backward_s':>10} {'peak_GiB':>8} {'base_GiB':>8}")
    context = get_context("spawn")
    for config in args.config:
        n, size, sigma = config.split(":")
        for backend, device in runs:
            with ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=1) as pool:
                result = pool.submit(run_config, config, backend, device, args.repeats, args.threads).result()
            pairs = "-" if result["pairs"] is None else f"{result['pairs']:,}"
            print(
                f"{backend:8} {device:6} {int(n):>9} {size + 'x' + size:>9} {float(sigma):>8.1f} {pairs:>11} "
                f"{result['forward']:>9.3f} {result['backward']:>10.3f} "
                f"{result['peak']:>8.2f} {result['base']:>8.2f}",
                flush=True,
            )
    print(
        "peak_GiB: peak RSS of the process (CPU) or torch.cuda.max_memory_allocated (GPU); base_GiB: the same"
    )
    print("before rendering (imports and scene). Times are the best of --repeats runs of one configuration.")


if __name__ == "__main__":
    main()

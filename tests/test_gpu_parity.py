"""GPU paths (bf16 autocast, SDPA kernels, fp16) against the CPU fp32 reference; skipped without CUDA.

Every GPU-only path has a CPU path computing the same thing; these tests compare them where a GPU exists.
Tolerances are those of the reduced precision, relative to the output magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1.0))


def test_dust3r_bf16_on_gpu_matches_fp32_on_cpu() -> None:
    from avat3r_core.models.dust3r.checkpoint import random_dust3r
    from avat3r_core.models.dust3r.inference import predict_pairs

    model, _ = random_dust3r(0)
    images = torch.rand(4, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pairs = [(0, 1), (1, 2), (3, 0)]
    cpu = predict_pairs(model.eval(), images, pairs)
    gpu = predict_pairs(model.cuda().eval(), images.cuda(), pairs)
    for key in cpu:
        assert _relative(gpu[key], cpu[key]) < 3e-2, key


def test_sapiens_bf16_on_gpu_matches_fp32_on_cpu(tmp_path) -> None:
    from avat3r_core.models.sapiens import load_sapiens, write_random_sapiens

    sizes = {"embed_dim": 64, "depth": 2, "num_heads": 4}
    path = write_random_sapiens(tmp_path / "tiny_clean.pth", sizes, seed=0)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    cpu = load_sapiens(path, sizes, device="cpu", input_size=128)(images)
    gpu = load_sapiens(path, sizes, device="cuda", input_size=128)(images).cpu()
    assert _relative(gpu, cpu) < 3e-2


def test_bgmv2_on_gpu_matches_cpu(tmp_path) -> None:
    from avat3r_core.models.bgmv2 import BGMv2Matter, write_random_checkpoint

    path = write_random_checkpoint(tmp_path / "pytorch_mobilenetv2.pth", backbone="mobilenetv2", seed=0)
    rng = np.random.default_rng(0)
    plates = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    images = plates.copy()
    images[:, 16:48, 16:48] = 200
    kwargs = {"backbone": "mobilenetv2", "refine_mode": "full"}
    alpha_cpu, _ = BGMv2Matter(path, device="cpu", **kwargs)(images, plates)
    alpha_gpu, _ = BGMv2Matter(path, device="cuda", **kwargs)(images, plates)
    assert np.abs(alpha_gpu - alpha_cpu).max() < 1e-3
    alpha_fp16, _ = BGMv2Matter(path, device="cuda", precision="fp16", **kwargs)(images, plates)
    assert np.abs(alpha_fp16 - alpha_cpu).max() < 2e-2


def test_avat3r_bf16_on_gpu_matches_fp32_on_cpu() -> None:
    """The network under bf16 autocast with CUDA attention kernels against fp32 on the CPU."""
    from avat3r_core.recon.model import Avat3rModel, ModelConfig
    from benchmarks.train_step import synthetic_batch

    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    model = Avat3rModel(cfg).eval()
    with torch.no_grad():  # non-zero offsets, so the heads' outputs are compared, not just the skips
        for head in model.heads.modules():
            if isinstance(head, torch.nn.Linear):
                head.weight.normal_(0, 0.02)
    batch = synthetic_batch("tiny", cfg, torch.device("cpu"))
    with torch.no_grad():
        cpu = model(batch)
        gpu_model = model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu = gpu_model({k: v.cuda() for k, v in batch.items()})
    for name in ("means", "scales", "opacities", "colors", "quats"):
        assert _relative(getattr(gpu, name).cpu(), getattr(cpu, name)) < 3e-2, name
    assert torch.equal(gpu.keep.cpu(), cpu.keep)

"""Batched pairwise DUSt3R inference over a set of same-size views.

Upstream ``inference()`` re-encodes both images of every pair. The encoder output of an image does not
depend on its partner, so here each image is encoded once and the (cheaper per pair) decoders and heads
run batched over pairs; for 4 views and 12 ordered pairs that is 4 encoder passes instead of 24.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch

from .network import AsymmetricCroCo3DStereo

OUTPUT_KEYS = ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")


def predict_pairs(
    model: AsymmetricCroCo3DStereo,
    images: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    batch_size: int = 8,
    autocast: bool = True,
) -> dict[str, torch.Tensor]:
    """Predict pointmaps for ordered pairs (i, j) of ``images`` (N,3,H,W) in [-1, 1], RGB.

    Returns CPU float32 tensors, pair p in row p: ``pts3d_1`` (P,H,W,3) view i in i's camera frame,
    ``conf_1`` (P,H,W), ``pts3d_2_in_1`` (P,H,W,3) view j in i's frame, ``conf_2`` (P,H,W).
    ``autocast`` enables bf16 autocast on CUDA only (heads stay fp32, as upstream); CPU runs in fp32.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    if model.conf_mode is None:
        raise ValueError("predict_pairs needs a model with a confidence output (conf_mode is None)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, _, h, w = images.shape
    pairs = [(int(i), int(j)) for i, j in pairs]
    bad = [p for p in pairs if not (0 <= p[0] < n and 0 <= p[1] < n)]
    if bad:
        raise ValueError(f"pair indices out of range for {n} images: {bad[:5]}")
    if not pairs:
        return {
            "pts3d_1": torch.zeros(0, h, w, 3),
            "conf_1": torch.zeros(0, h, w),
            "pts3d_2_in_1": torch.zeros(0, h, w, 3),
            "conf_2": torch.zeros(0, h, w),
        }

    device = next(model.parameters()).device
    amp = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if autocast and device.type == "cuda"
        else nullcontext()
    )
    used = sorted({i for p in pairs for i in p})
    slot = {img: k for k, img in enumerate(used)}
    imgs = images[used].to(device=device, dtype=torch.float32)
    # true_shape as upstream's image loader gives it: int32 [H, W] per image.
    shape = torch.tensor([h, w], dtype=torch.int32, device=device)

    outs: dict[str, list[torch.Tensor]] = {k: [] for k in OUTPUT_KEYS}
    with torch.inference_mode(), amp:
        feats, poss = [], []
        for s in range(0, len(used), batch_size):
            chunk = imgs[s : s + batch_size]
            f, p = model.encode(chunk, shape.expand(len(chunk), 2))
            feats.append(f)
            poss.append(p)
        feat, pos = torch.cat(feats), torch.cat(poss)

        for s in range(0, len(pairs), batch_size):
            chunk_pairs = pairs[s : s + batch_size]
            i1 = torch.tensor([slot[i] for i, _ in chunk_pairs], device=device)
            i2 = torch.tensor([slot[j] for _, j in chunk_pairs], device=device)
            true_shape = shape.expand(len(chunk_pairs), 2)
            dec1, dec2 = model.decode(feat[i1], pos[i1], feat[i2], pos[i2])
            res1, res2 = model.heads(dec1, dec2, true_shape, true_shape)
            outs["pts3d_1"].append(res1["pts3d"].float().cpu())
            outs["conf_1"].append(res1["conf"].float().cpu())
            outs["pts3d_2_in_1"].append(res2["pts3d_in_other_view"].float().cpu())
            outs["conf_2"].append(res2["conf"].float().cpu())
    return {k: torch.cat(v) for k, v in outs.items()}

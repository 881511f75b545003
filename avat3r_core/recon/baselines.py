"""Trivial baselines a trained Avat3r must beat, rendered with the same renderer and cameras.

* **mean image**: for each supervision camera, the per-pixel mean of the training subjects' supervision
  crops from that camera (the rig is shared across subjects, so this is the best constant prediction).
* **nearest view**: the input view whose camera centre is closest in direction to the target camera, its
  pixels splatted at their position-map points (re-projection through the geometry the model receives).
* **all views**: every input view's pixels splatted at their position-map points, i.e. what the model
  predicts with both skip connections and zero offsets.

Splats are isotropic with a standard deviation of ``footprint`` input pixels at their depth, opaque.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.model import camera_centers
from avat3r_core.render import Gaussians


def nearest_input_view(batch: Mapping[str, torch.Tensor], b: int, j: int) -> int:
    """Index of the input view of sample ``b`` seen from the direction closest to target camera ``j``."""
    inputs = torch.nn.functional.normalize(camera_centers(batch["input_w2c"][b].double()), dim=-1)
    target = torch.nn.functional.normalize(camera_centers(batch["target_w2c"][b][j].double()), dim=-1)
    return int(torch.argmax(inputs @ target))


def view_splats(
    batch: Mapping[str, torch.Tensor],
    b: int,
    views: list[int],
    *,
    confidence_threshold: float = 0.5,
    footprint: float = 0.6,
) -> Gaussians:
    """Opaque isotropic splats at the position map of the given input views of sample ``b``."""
    means, colors, scales = [], [], []
    for v in views:
        keep = batch["confidence"][b, v, 0] >= confidence_threshold
        points = batch["position"][b, v].permute(1, 2, 0)[keep].float()
        w2c = batch["input_w2c"][b, v].float()
        depth = (points @ w2c[:3, :3].T + w2c[:3, 3])[:, 2].clamp_min(1e-6)
        focal = batch["input_K"][b, v, 0, 0].float()
        means.append(points)
        colors.append(batch["input_rgb"][b, v].permute(1, 2, 0)[keep].float())
        scales.append((footprint * depth / focal)[:, None].expand(-1, 3))
    n = sum(m.shape[0] for m in means)
    quats = torch.zeros(n, 4, device=batch["position"].device)
    quats[:, 0] = 1.0
    return Gaussians(
        means=torch.cat(means),
        quats=quats,
        scales=torch.cat(scales),
        opacities=torch.ones(n, device=quats.device),
        colors=torch.cat(colors),
    )


def camera_mean_images(dataset: Avat3rShardDataset) -> dict[str, np.ndarray]:
    """Per supervision camera id, the mean (H, W, 3) float32 image in [0, 1] over the dataset's subjects."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for subject in dataset.subjects:
        rgb = dataset._group(subject, "crops")["supervision/rgb"]
        for c, camera in enumerate(subject.supervision_cameras):
            valid = np.flatnonzero(subject.supervision_valid[c])
            if valid.size == 0:
                continue
            images = rgb.oindex[c, valid].astype(np.float64) / 255.0
            sums[camera] = sums.get(camera, 0.0) + images.sum(axis=0)
            counts[camera] = counts.get(camera, 0) + valid.size
    if not sums:
        raise ValueError("no valid supervision images to average")
    overall = sum(sums.values()) / sum(counts.values())
    means = {camera: (sums[camera] / counts[camera]).astype(np.float32) for camera in sums}
    means["*"] = overall.astype(np.float32)
    return means

"""Held-out evaluation of a trained model against the trivial baselines, with a comparison grid.

Every (subject, target timestep) of the chosen split is one item: V input views drawn by the dataset's
seeded sampler and every valid supervision camera of the target timestep. The model, the per-camera mean
image of the training subjects and the input views re-projected through their position maps
(:mod:`.baselines`) are rendered into the same cameras and scored with the same PSNR and SSIM
(:mod:`avat3r_core.metrics.image`), so the numbers compare directly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from avat3r_core.metrics.image import psnr, ssim
from avat3r_core.recon.baselines import camera_mean_images, nearest_input_view, view_splats
from avat3r_core.recon.checkpoint import load_checkpoint, load_model_weights
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.model import Avat3rModel, ModelConfig
from avat3r_core.recon.predict import image_grid, render_supervision, to_device, to_uint8
from avat3r_core.render import render
from avat3r_core.store.atomic import atomic_path, write_json_atomic

log = logging.getLogger("avat3r.evaluate")

METHODS = ("model", "all_views", "nearest_view", "mean_image")


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Avat3rModel, dict]:
    """A model.pt (or checkpoint) as an eval-mode model on ``device``, with its saved config."""
    state = load_checkpoint(path)
    config = state["config"]
    model = Avat3rModel(ModelConfig.from_dict(config["model"]))
    load_model_weights(model, state, path, config["model"])
    return model.to(device).eval(), config


def _score(pred: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    pred, target = pred.float().clamp(0, 1), target.float()
    return {"psnr": psnr(pred, target).tolist(), "ssim": ssim(pred, target).tolist()}


@torch.no_grad()
def evaluate_heldout(
    model_path: str | Path,
    index: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    seed: int = 0,
    renderer: str = "auto",
    device: str | None = None,
    max_items: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the model and the baselines on ``split``; write metrics.json and grid.png into ``out_dir``."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(model_path, device)
    train_cfg: Mapping[str, Any] = config["train"]
    threshold = float(config["model"]["confidence_threshold"])
    background = torch.tensor(train_cfg["background"], dtype=torch.float32, device=device)
    dataset = Avat3rShardDataset(index, split=split, n_views=train_cfg["n_views"], seed=seed)
    # Every valid supervision camera of a target timestep is scored: pad to the largest camera count.
    dataset.n_supervision = max(len(s.supervision_cameras) for s in dataset.subjects)
    means = camera_mean_images(Avat3rShardDataset(index, split="train", n_views=train_cfg["n_views"]))
    items = range(len(dataset) if max_items is None else min(max_items, len(dataset)))
    scores: dict[str, dict[str, list[float]]] = {m: {"psnr": [], "ssim": []} for m in METHODS}
    per_subject: dict[str, dict[str, list[float]]] = {}
    grid = None
    for i in tqdm(items, desc=f"evaluate {split}", disable=not progress):
        sample = dataset[i]
        batch = to_device(
            {k: v[None] if isinstance(v, torch.Tensor) else [v] for k, v in sample.items()}, device
        )
        out = render_supervision(model(batch), batch, 0, background=background, backend=renderer)
        valid = torch.nonzero(batch["target_valid"][0]).flatten().tolist()
        K, w2c = batch["target_K"][0][valid], batch["target_w2c"][0][valid]
        size = out.target.shape[-1]

        scene = view_splats(
            batch, 0, list(range(batch["input_rgb"].shape[1])), confidence_threshold=threshold
        )
        all_views = render(scene, K, w2c, size, size, background, renderer).rgb
        nearest = torch.empty_like(all_views)
        closest = [nearest_input_view(batch, 0, j) for j in valid]
        for view in sorted(set(closest)):  # one render per input view, into the targets it is closest to
            rows = [n for n, c in enumerate(closest) if c == view]
            scene = view_splats(batch, 0, [view], confidence_threshold=threshold)
            nearest[rows] = render(scene, K[rows], w2c[rows], size, size, background, renderer).rgb
        cameras = dataset.camera_ids(sample["subject"], "supervision")
        mean = (
            torch.stack(
                [
                    torch.from_numpy(means.get(cameras[int(batch["target_camera_index"][0][j])], means["*"]))
                    for j in valid
                ]
            )
            .permute(0, 3, 1, 2)
            .to(device)
        )
        predictions = {"model": out.pred, "all_views": all_views, "nearest_view": nearest, "mean_image": mean}
        for method, pred in predictions.items():
            for metric, values in _score(pred, out.target).items():
                scores[method][metric] += values
                per_subject.setdefault(sample["subject"], {}).setdefault(f"{method}/{metric}", []).extend(
                    values
                )
        if grid is None:
            grid = to_uint8(image_grid([out.target, out.pred, all_views, nearest, mean])[None])[0]
    summary = {
        "split": split,
        "items": len(items),
        "views_scored": len(scores["model"]["psnr"]),
        "model": str(model_path),
        "methods": {
            m: {metric: float(np.mean(values)) for metric, values in s.items()} for m, s in scores.items()
        },
        "subjects": {
            subject: {key: float(np.mean(values)) for key, values in entries.items()}
            for subject, entries in per_subject.items()
        },
        "grid_rows": [
            "ground truth",
            "model",
            "all input views re-projected",
            "nearest input view",
            "mean image",
        ],
    }
    baselines = {m: summary["methods"][m]["psnr"] for m in METHODS if m != "model"}
    best = max(baselines, key=baselines.get)
    summary["best_baseline"] = best
    summary["psnr_gain_over_best_baseline"] = summary["methods"]["model"]["psnr"] - baselines[best]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if grid is not None:
        with atomic_path(out_dir / "grid.png") as temporary:
            Image.fromarray(grid).save(temporary, format="PNG")
    write_json_atomic(out_dir / "metrics.json", summary)
    log.info(
        "PSNR model %.2f dB, best baseline %s %.2f dB (gain %.2f dB) over %d views",
        summary["methods"]["model"]["psnr"],
        best,
        baselines[best],
        summary["psnr_gain_over_best_baseline"],
        summary["views_scored"],
    )
    return summary

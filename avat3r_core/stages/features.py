"""Stage `features`: Sapiens features for every input crop (input cameras x input timesteps).

Sapiens-2B is too expensive to run inside training (the paper precomputes it). Each crop is squashed to
`features.input_size` and the last-layer tokens after the final norm, class token dropped, are stored as
float16 `features` (Ci, Ti, h, w, C): channels last so that one view is one chunk (transpose to (C, h, w)
when reading; 64x64x1920 values, ~15.7 MB per view at 2B). The feature grid must line up with the model's
token grid: 8 px patches of the input crop give crop/8 tokens per side, and Sapiens gives input_size/16, so
input_size must be twice the crop size (a 512 crop upsampled to 1024 gives 64x64). Without a checkpoint the
stage uses a tiny randomly initialised Sapiens, labelled RANDOM WEIGHTS in the log and the store.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from avat3r_core.errors import ConfigError
from avat3r_core.models.sapiens import SapiensFeatures, load_sapiens, write_random_sapiens
from avat3r_core.seeds import derive_seed
from avat3r_core.stages import TOKEN_PATCH
from avat3r_core.stages.positions import InputCrops
from avat3r_core.store.zarr_store import write_store

log = logging.getLogger(__name__)


def load_extractor(cfg: dict[str, Any], seed: int) -> SapiensFeatures:
    device = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if cfg["checkpoint"]:
        return load_sapiens(
            cfg["checkpoint"],
            cfg["tiny"] if cfg["model"] == "tiny" else cfg["model"],
            device=device,
            input_size=cfg["input_size"],
            batch_size=cfg["batch_size"],
        )
    with tempfile.TemporaryDirectory() as folder:
        path = write_random_sapiens(
            Path(folder) / "tiny_random_clean.pth", cfg["tiny"], seed=derive_seed(seed, "sapiens", "features")
        )
        return load_sapiens(
            path, cfg["tiny"], device=device, input_size=cfg["input_size"], batch_size=cfg["batch_size"]
        )


def run_features(
    crops_path: str | Path,
    cfg: dict[str, Any],
    seed: int,
    out: str | Path,
    *,
    subject: str,
    progress: bool = True,
) -> dict[str, Any]:
    crops = InputCrops(crops_path)
    grid, tokens = cfg["input_size"] // 16, crops.size // TOKEN_PATCH
    if grid != tokens or cfg["input_size"] % 16:
        raise ConfigError(
            "features.input_size",
            f"{cfg['input_size']} gives a {grid}x{grid} feature grid but the {crops.size} px input crops "
            f"have a {tokens}x{tokens} token grid ({TOKEN_PATCH} px patches); use {2 * crops.size}",
        )
    extractor = load_extractor(cfg, seed)
    log.info("subject %s: features from %s", subject, extractor.description)
    n_c, n_t = len(crops.camera_ids), len(crops.frames)
    channels = None
    with write_store(out, stage="features", subject=subject, config=cfg) as store:
        array = None
        for c in tqdm(range(n_c), desc=f"{subject} features", disable=not progress):
            slots = np.flatnonzero(crops.valid[c])
            if array is None:
                probe = extractor(crops.rgb[c, int(slots[0])][None]) if len(slots) else None
                channels = int(probe.shape[1]) if probe is not None else 0
                array = store.create_images(
                    "features",
                    (n_c, n_t, grid, grid, channels),
                    dtype="float16",
                    images_per_shard=cfg["images_per_shard"],
                )
            block = np.zeros((n_t, grid, grid, channels), dtype=np.float16)
            if len(slots):
                images = np.stack([crops.rgb[c, int(t)] for t in slots])
                block[slots] = extractor(images).permute(0, 2, 3, 1).numpy().astype(np.float16)
            array[c] = block
        store.write_array("valid", crops.valid)
        store.write_array("camera_ids", np.asarray(crops.camera_ids))
        store.write_array("frames", np.asarray(crops.frames, dtype=np.int64))
        summary = {
            "model": extractor.description,
            "fingerprint": extractor.fingerprint(),
            "views": int(crops.valid.sum()),
            "grid": grid,
            "channels": channels,
        }
        store.set_attrs(
            summary=summary,
            layout="features (camera, timestep, h, w, C)",
            random_weights=extractor.random_weights,
        )
    log.info(
        "subject %s: %d feature maps of %dx%dx%d (float16)%s",
        subject,
        summary["views"],
        grid,
        grid,
        channels,
        " -- RANDOM WEIGHTS: a test network, not Sapiens" if extractor.random_weights else "",
    )
    return summary

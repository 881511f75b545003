"""Stage `views`: input-capable cameras, their DUSt3R partner views, and what the training sampler needs.

Cameras that see only the back of the head cannot serve as inputs (the paper excludes them). The angle
test runs in the head-centric frame, where the cameras move with the head: validity is stored per (input
timestep, camera), while partner selection and the training-time k-farthest sampler use one reference pose
per subject (`avat3r_core.geometry.views.reference_centers`: mean direction over the input timesteps at the
mean distance), because the paper stores one position map per input view with fixed partners and the 4
inputs of a sample may come from different timesteps. A partner whose image is missing at a timestep is
replaced by the next farthest-point candidate; every replacement is logged and stored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from avat3r_core import __version__
from avat3r_core.errors import CaptureError
from avat3r_core.geometry import views as geo
from avat3r_core.seeds import derive_seed
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.store.atomic import write_json_atomic

log = logging.getLogger(__name__)


def select_views(
    index: CaptureIndex, frames: dict[str, Any], cfg: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Front-facing cameras, partner views per input camera and timestep, and the sampler's camera pool."""
    subject = index.subject
    camera_ids = index.camera_ids
    input_frames = [int(frame) for frame, _ in frames["input"]]
    centers = np.stack(
        [[index.head_centric(camera, frame).center for camera in camera_ids] for frame in input_frames]
    )  # (T, C, 3) head-centric camera centres
    forward = np.asarray(cfg["forward_axis"], dtype=np.float64)
    angle = cfg["max_angle_deg"]
    valid_t = geo.front_facing_per_timestep(centers, index.head_center, forward, max_angle_deg=angle)
    reference = geo.reference_centers(centers, index.head_center)
    valid_ref = geo.front_facing(reference, index.head_center, forward, max_angle_deg=angle)
    pool = geo.sampler_pool(valid_ref, valid_t)
    pool_mask = np.zeros(len(camera_ids), dtype=bool)
    pool_mask[pool] = True
    if pool.size < cfg["n_partners"] + 1:
        raise CaptureError(
            f"only {pool.size} front-facing cameras (views.max_angle_deg={angle}); "
            f"each input camera needs {cfg['n_partners']} partners",
            subject=subject,
        )

    partners: dict[str, Any] = {}
    per_timestep: dict[str, dict[str, list[str]]] = {}
    replacements: list[list[Any]] = []
    input_views: list[list[Any]] = []
    skipped: list[list[Any]] = []
    for c in pool:
        camera = camera_ids[c]
        chosen = geo.partner_views(
            reference,
            pool_mask,
            int(c),
            n_candidates=cfg["n_candidates"],
            n_partners=cfg["n_partners"],
            seed=derive_seed(seed, subject, f"views/{camera}"),
        )
        partners[camera] = {
            "candidates": [camera_ids[i] for i in chosen.candidates],
            "partners": [camera_ids[i] for i in chosen.partners],
            "fallbacks": [camera_ids[i] for i in chosen.fallbacks],
        }
        per_timestep[camera] = {}
        for t, frame in enumerate(input_frames):
            if not valid_t[t, c] or not index.has_image(camera, frame):
                reason = "image missing" if valid_t[t, c] else "back-facing at this timestep"
                skipped.append([camera, frame, reason])
                continue

            def available(i: int, frame: int = frame, t: int = t) -> bool:
                return bool(valid_t[t, i]) and index.has_image(camera_ids[i], frame)

            try:
                used, replaced = geo.replace_missing(chosen.partners, chosen.fallbacks, available)
            except ValueError:
                skipped.append([camera, frame, f"fewer than {cfg['n_partners']} partners with images"])
                continue
            per_timestep[camera][str(frame)] = [camera_ids[i] for i in used]
            replacements += [[camera, frame, camera_ids[a], camera_ids[b]] for a, b in replaced]
            input_views.append([camera, frame])

    return {
        "subject": subject,
        "code_version": __version__,
        "reference_pose": "mean head-centric camera direction over the input timesteps, at the mean distance",
        "max_angle_deg": angle,
        "camera_ids": camera_ids,
        "angles_reference_deg": geo.camera_angles(reference, index.head_center, forward).round(3).tolist(),
        "reference_centers": reference.tolist(),
        "input_frames": input_frames,
        "front_facing_per_timestep": {
            str(frame): [camera_ids[c] for c in np.flatnonzero(valid_t[t])]
            for t, frame in enumerate(input_frames)
        },
        "input_cameras": [camera_ids[c] for c in pool],
        "partners": partners,
        "partners_per_timestep": per_timestep,
        "partner_replacements": replacements,
        "input_views": input_views,
        "skipped_input_views": skipped,
    }


def write_views(
    index: CaptureIndex, frames: dict[str, Any], cfg: dict[str, Any], seed: int, out: str | Path
) -> dict[str, Any]:
    views = select_views(index, frames, cfg, seed)
    write_json_atomic(out, views)
    log.info(
        "subject %s: %d/%d cameras front-facing (max angle %.0f deg, reference pose); %d input views "
        "(%d skipped: missing or back-facing at their timestep); %d partner replacements for missing images",
        views["subject"],
        len(views["input_cameras"]),
        len(views["camera_ids"]),
        views["max_angle_deg"],
        len(views["input_views"]),
        len(views["skipped_input_views"]),
        len(views["partner_replacements"]),
    )
    for camera, frame, missing, replacement in views["partner_replacements"]:
        log.info(
            "camera %s, frame %s: partner %s missing, replaced by %s", camera, frame, missing, replacement
        )
    return views

"""Writes the synthetic capture in the on-disk layout of the Ava-256 4TB release, plus its ground truth.

Layout (see /work/shared/reference/datasets.md section 1) under `root`:
    256_ids.csv, face_topology.obj,
    {mcd}--{mct}--{sid}/decoder/{camera_calibration.json, frame_list.csv, head_pose/head_pose.zip,
        kinematic_tracking/registration_vertices.zip, image/cam{CAM}.zip,
        background_image/background_image.zip, foreground_masks/cam{CAM}.zip,
        expression_codes/aeparams_1440000.pkl},
    gagavatar/{sid}/optim.pkl (with `tracking`: FLAME codes as GAGAvatar tracker output, `flame.py`)
and under `groundtruth/{sid}/`: meta.json, cameras.npz, head_pose.npz, blend_weights.npy, cam{CAM}.npz.

Every file is a pure function of the config: zip entries carry a fixed timestamp and the AVIF encoder runs
single-threaded, so two runs give identical bytes and Snakemake reruns are no-ops downstream.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from plyfile import PlyData, PlyElement
from tqdm import tqdm

from avat3r_core.store.atomic import atomic_path

from .config import (
    SyntheticConfig,
    _capture_date_time,
    subject_rng,
    synthetic_capture_folder,
    synthetic_subject_ids,
)
from .expression import BLEND_WEIGHT_NAMES
from .flame import GAGAVATAR_TRACKING, write_gagavatar_tracking
from .head import build_head, sample_identity
from .render import SubjectScene, clean_plate, render_frame, subject_scene, to_uint8_with_noise

IMAGE_QUALITY = 90
MASK_QUALITY = 95
AVIF_SPEED = 9
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def encode_avif(array: np.ndarray, quality: int) -> bytes:
    """AVIF bytes of an (H, W, 3) RGB or (H, W) grey uint8 image (single-threaded for reproducible bytes)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="AVIF", quality=quality, speed=AVIF_SPEED, max_threads=1)
    return buf.getvalue()


class _StoredZip:
    """A ZIP_STORED archive (like the release's zips) with fixed member timestamps, for identical bytes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)

    def add(self, name: str, data: bytes) -> None:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        self._zip.writestr(info, data)

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> _StoredZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez_compressed with fixed member timestamps (numpy stamps the current time, breaking identical
    reruns); readable by np.load. Deflate level 1: the arrays are mostly zeros and speed matters more."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            # ZipFile.open ignores the archive's level; the slot is `_compresslevel` up to 3.12,
            # `compress_level` from 3.13 on.
            level_slot = (
                "compress_level" if "compress_level" in zipfile.ZipInfo.__slots__ else "_compresslevel"
            )
            setattr(info, level_slot, 1)
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


def _ply_bytes(verts: np.ndarray) -> bytes:
    """Vertex-only binary little-endian PLY (float32 x, y, z), like registration_vertices/{frame}.ply."""
    data = np.empty(len(verts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    data["x"], data["y"], data["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    buf = io.BytesIO()
    PlyData([PlyElement.describe(data, "vertex")], text=False, byte_order="<").write(buf)
    return buf.getvalue()


def _pose_text(pose: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savetxt(buf, pose[:3, :4])
    return buf.getvalue()


def write_topology(path: Path) -> None:
    """face_topology.obj: the mean identity's neutral tracked mesh (head-local mm), a vt per v, 1-based f."""
    model = build_head(sample_identity(None))
    verts = model.tracked_vertices(np.zeros(len(BLEND_WEIGHT_NAMES)))
    lines = ["# synthetic Ava-256 stand-in for assets/face_topology.obj (head-local, mm)"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in model.tracked_uv]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in model.tracked_faces + 1]
    path.write_text("\n".join(lines) + "\n")


def _write_ids(root: Path, cfg: SyntheticConfig) -> None:
    with open(root / "256_ids.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["mcd", "sid", "mct"])
        for sid in synthetic_subject_ids(cfg):
            mcd, mct = _capture_date_time(cfg, sid)
            writer.writerow([mcd, sid, mct])


def _write_subject_metadata(decoder: Path, gt: Path, cfg: SyntheticConfig, scene: SubjectScene) -> None:
    """Calibration, frame list, head poses, tracked meshes, codes, and the subject's ground truth."""
    dome, tl = scene.dome, scene.timeline
    decoder.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    krt = [
        {
            "cameraId": cam,
            "projectionModel": "Pinhole",
            "distortionModel": "RadialAndTangential",
            "K": dome.k_native[c].T.tolist(),  # stored transposed (column-major) like the release
            "distortion": [0.0, 0.0, 0.0, 0.0],
            "T": dome.w2c_mm[c].T.tolist(),
        }
        for c, cam in enumerate(dome.camera_ids)
    ]
    (decoder / "camera_calibration.json").write_text(json.dumps({"KRT": krt}, indent=1) + "\n")
    with open(decoder / "frame_list.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["seg_id", "frame_id"])
        writer.writerows(zip(tl.segments, (int(f) for f in tl.frame_ids), strict=True))
    with _StoredZip(decoder / "head_pose" / "head_pose.zip") as zf:
        for f, pose in zip(tl.frame_ids, tl.head_to_world_mm, strict=True):
            zf.add(f"{int(f):06d}.txt", _pose_text(pose))
    with _StoredZip(decoder / "kinematic_tracking" / "registration_vertices.zip") as zf:
        for f, verts in zip(tl.frame_ids, scene.tracked_local, strict=True):
            zf.add(f"{int(f):06d}.ply", _ply_bytes(verts))
    (decoder / "expression_codes").mkdir(exist_ok=True)
    codes = {int(f): code.astype(np.float32) for f, code in zip(tl.frame_ids, tl.codes, strict=True)}
    (decoder / "expression_codes" / "aeparams_1440000.pkl").write_bytes(pickle.dumps(codes, protocol=4))

    # Ground truth in pipeline units: metres, K at the actual image resolution.
    k_img = np.stack([scene.k_image(c) for c in range(len(dome.camera_ids))])
    w2c_m = dome.w2c_mm.copy()
    w2c_m[:, :3, 3] /= 1000.0
    save_npz(gt / "cameras.npz", camera_ids=np.array(dome.camera_ids), K=k_img, w2c=w2c_m)
    h2w_m = tl.head_to_world_mm.copy()
    h2w_m[:, :3, 3] /= 1000.0
    save_npz(gt / "head_pose.npz", frame_ids=tl.frame_ids, head_to_world=h2w_m)
    np.save(gt / "blend_weights.npy", tl.weights.astype(np.float32))
    meta = {
        "subject": scene.sid,
        "capture_folder": synthetic_capture_folder(cfg, scene.sid),
        "frame_ids": [int(f) for f in tl.frame_ids],
        "frame_segments": tl.segments,
        "segments": list(cfg.segments),
        "camera_ids": dome.camera_ids,
        "missing": [[dome.camera_ids[c], int(tl.frame_ids[f])] for c, f in tl.missing],
        "image_size": [scene.height, scene.width],
        "downsample": cfg.downsample,
        "blend_weight_names": list(BLEND_WEIGHT_NAMES),
        "n_tracked_vertices": scene.model.n_tracked,
        "units": {"groundtruth": "metres", "capture": "millimetres"},
        "seed": cfg.seed,
    }
    (gt / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _render_camera_job(args: tuple[SyntheticConfig, str, int, str, str]) -> tuple[str, int, bytes, int]:
    """Render, encode and write all frames of one (subject, camera); returns the encoded clean plate."""
    cfg, sid, cam, decoder_str, gt_str = args
    decoder, gt = Path(decoder_str), Path(gt_str)
    scene = subject_scene(cfg, sid)
    cam_id = scene.dome.camera_ids[cam]
    missing = {f for c, f in scene.timeline.missing if c == cam}
    plate = clean_plate(scene, cam)
    n_frames = len(scene.timeline.frame_ids)
    alpha = np.zeros((n_frames, scene.height, scene.width), dtype=np.uint8)
    depth = np.zeros((n_frames, scene.height, scene.width), dtype=np.float32)
    tracked = np.zeros((n_frames, scene.height, scene.width), dtype=bool)
    with (
        _StoredZip(decoder / "image" / f"cam{cam_id}.zip") as images,
        _StoredZip(decoder / "foreground_masks" / f"cam{cam_id}.zip") as masks,
    ):
        for f, frame_id in enumerate(scene.timeline.frame_ids):
            rng = subject_rng(cfg, sid, f"noise/{cam_id}/{int(frame_id)}")
            out = render_frame(scene, cam, f, plate, rng)
            alpha[f], depth[f], tracked[f] = out.alpha, out.depth_m, out.tracked
            if f in missing:
                continue
            images.add(f"cam{cam_id}/{int(frame_id):06d}.avif", encode_avif(out.image, IMAGE_QUALITY))
            masks.add(f"{int(frame_id):06d}.avif", encode_avif(out.alpha, MASK_QUALITY))
    save_npz(gt / f"cam{cam_id}.npz", alpha=alpha, depth=depth, tracked=tracked)
    plate_bytes = encode_avif(
        to_uint8_with_noise(plate, subject_rng(cfg, sid, f"plate/{cam_id}")), IMAGE_QUALITY
    )
    return sid, cam, plate_bytes, n_frames


def _run_jobs(jobs: list[tuple], workers: int) -> Iterable[tuple[str, int, bytes, int]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_render_camera_job, jobs)
        return
    # Not "fork": the caller may hold threads (zarr's I/O pool, torch, an in-process Snakemake), and a child
    # forked while one of them holds a lock deadlocks. The fork server starts from a clean process.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ctx.Pool(processes=workers) as pool:
        yield from pool.imap_unordered(_render_camera_job, jobs, chunksize=1)


def generate_synthetic_capture(
    root: Path,
    groundtruth: Path,
    cfg: SyntheticConfig,
    workers: int = 2,
    progress: bool = True,
    tracking: bool = False,
) -> None:
    """Write the whole synthetic capture under `root` and its ground truth under `groundtruth`; with
    `tracking`, also each subject's FLAME codes as GAGAvatar tracker output (`flame.GAGAVATAR_TRACKING`).

    Both folders are written as temporary siblings and renamed into place at the end, so an interrupted run
    never leaves a capture that looks complete.
    """
    with (
        atomic_path(root, directory=True) as partial_root,
        atomic_path(groundtruth, directory=True) as partial_groundtruth,
    ):
        _generate_into(partial_root, partial_groundtruth, cfg, workers, progress)
        if tracking:
            for sid in synthetic_subject_ids(cfg):
                timeline = subject_scene(cfg, sid).timeline
                path = partial_root / GAGAVATAR_TRACKING.format(subject=sid)
                write_gagavatar_tracking(path, list(timeline.segments), timeline.weights)


def _generate_into(root: Path, groundtruth: Path, cfg: SyntheticConfig, workers: int, progress: bool) -> None:
    """One job per (subject, camera), so `workers` processes share the work evenly; each subject's scene is
    built once in the parent before the pool forks, so workers inherit it instead of rebuilding it.
    """
    _write_ids(root, cfg)
    write_topology(root / "face_topology.obj")
    jobs = []
    for sid in synthetic_subject_ids(cfg):
        scene = subject_scene(cfg, sid)
        decoder = root / synthetic_capture_folder(cfg, sid) / "decoder"
        _write_subject_metadata(decoder, groundtruth / sid, cfg, scene)
        jobs += [(cfg, sid, c, str(decoder), str(groundtruth / sid)) for c in range(cfg.n_cameras)]

    plates: dict[str, dict[int, bytes]] = {sid: {} for sid in synthetic_subject_ids(cfg)}
    n_images = len(jobs) * len(cfg.segments) * cfg.frames_per_segment
    with tqdm(total=n_images, disable=not progress, desc="synthetic capture", unit="img") as bar:
        for sid, cam, plate_bytes, n_frames in _run_jobs(jobs, workers):
            plates[sid][cam] = plate_bytes
            bar.update(n_frames)
    for sid, by_cam in plates.items():
        scene = subject_scene(cfg, sid)
        decoder = root / synthetic_capture_folder(cfg, sid) / "decoder"
        with _StoredZip(decoder / "background_image" / "background_image.zip") as zf:
            for cam in sorted(by_cam):
                zf.add(f"{scene.dome.camera_ids[cam]}.avif", by_cam[cam])

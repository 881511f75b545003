"""Writes the synthetic capture in the NeRSemble dataset v2 layout (mp4 per camera and sequence), plus its
ground truth, so that `capture/nersemble.py` is exercised on real videos.

Layout under `root` (the reader's docstring lists the sources):
    {pid:03d}/calibration/camera_params.json
        {"intrinsics": 3x3 for 2200 x 3208, "world_2_cam": {serial: 4x4, metres}}
    {pid:03d}/sequences/{SEQ}/images/cam_{serial}.mp4      H.264 yuv420p (imageio-ffmpeg), 25 fps
    {pid:03d}/sequences/BACKGROUND/image_{serial}.jpg      clean plate
    {pid:03d}/sequences/{SEQ}/tracking/flame2023_tracking_v2.npz   with `tracking=True` (benchmark format)
    gagavatar/{pid:03d}/optim.pkl        with `tracking=True`: the same codes as GAGAvatar output (`flame.py`)
and under `groundtruth/{pid:03d}/`: meta.json, cameras.npz (K at the video size, w2c metres), head_pose.npz
(reader frame ids, head-to-world metres), blend_weights.npy, cam{serial}.npz (image, alpha, depth, tracked).

The scene is the Ava-256-layout generator's (same head, motion, dome and renderer; subject ``"001"`` is
``"AAA001"``), seen through one shared pinhole K like NeRSemble's rig, at an even-sized downsample of the
2200 x 3208 frame (H.264 4:2:0 needs even sizes). Frames of each segment become the frames 0..F-1 of a
sequence video (NeRSemble videos have no gaps; the Ava-256 generator's dropped images are not dropped here).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from avat3r_core.capture.nersemble import BACKGROUND, NATIVE_HEIGHT, NATIVE_WIDTH, frame_id, sequence_number
from avat3r_core.store.atomic import atomic_path

from .config import NATIVE_HEIGHT as AVA_HEIGHT
from .config import NATIVE_WIDTH as AVA_WIDTH
from .config import SyntheticConfig, subject_rng, synthetic_subject_ids
from .dome import HEAD_CENTRE_MM, HEAD_FRACTION, Dome
from .expression import BLEND_WEIGHT_NAMES
from .flame import GAGAVATAR_TRACKING, flame_expression, write_gagavatar_tracking
from .render import SubjectScene, clean_plate, render_frame, subject_scene, to_uint8_with_noise
from .writer import save_npz

FPS = 25
CRF = 12
"""x264 constant rate factor: near-transparent on these small noisy frames (PSNR ~40 dB or more)."""
PLATE_QUALITY = 95
SEQUENCE_FOR_SEGMENT = {
    "EXP_eye_wide": "EXP-2-eyes",
    "EXP_tongue001": "EXP-6-tongue-1",
    "EXP_jaw003": "EXP-8-jaw-1",
    "EXP_neutral_peak": "EXP-1-head",
    "EXP_free_face": "FREE",
}
"""The generator's Ava-256 segment names -> the NeRSemble sequence asking for the same expressions."""


def nersemble_sequence(segment: str) -> str:
    return SEQUENCE_FOR_SEGMENT.get(segment, segment.replace("_", "-"))


def nersemble_image_size(downsample: int) -> tuple[int, int]:
    """(height, width): 3208 x 2200 divided by `downsample`, rounded to even numbers (ds 16: 200 x 138)."""
    ds = int(downsample)
    if ds < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    return 2 * int(np.floor(NATIVE_HEIGHT / ds / 2 + 0.5)), 2 * int(np.floor(NATIVE_WIDTH / ds / 2 + 0.5))


def synthetic_nersemble_subject_ids(cfg: SyntheticConfig) -> list[str]:
    """Participant ids "001", "002", ...; "001" renders the scene of the first Ava-256-layout subject."""
    return [f"{i + 1:03d}" for i in range(cfg.n_subjects)]


def _serial(camera_id: str) -> str:
    """A 9-digit serial like NeRSemble's from the generator's 6-digit camera id."""
    return f"222{camera_id}"


def shared_intrinsics(scene: SubjectScene) -> np.ndarray:
    """One K for the full 2200 x 3208 frame: the head fills HEAD_FRACTION of the height at the rig's mean
    distance, principal point at the centre."""
    distance = np.linalg.norm(scene.dome.centres_mm - HEAD_CENTRE_MM, axis=1).mean()
    focal = HEAD_FRACTION * NATIVE_HEIGHT * distance / 250.0
    return np.array([[focal, 0.0, NATIVE_WIDTH / 2], [0.0, focal, NATIVE_HEIGHT / 2], [0.0, 0.0, 1.0]])


def nersemble_scene(cfg: SyntheticConfig, pid: str) -> SubjectScene:
    """The subject's scene, seen through the shared K at the NeRSemble-layout image size.

    The renderer takes K as the Ava-256 native K scaled to the image (`SubjectScene.k_image`); the native
    K stored in the scene is chosen so that this scaling gives exactly the NeRSemble K at the video size.
    """
    index = synthetic_nersemble_subject_ids(cfg).index(pid)
    scene = subject_scene(cfg, synthetic_subject_ids(cfg)[index])
    height, width = nersemble_image_size(cfg.downsample)
    k_image = np.diag([width / NATIVE_WIDTH, height / NATIVE_HEIGHT, 1.0]) @ shared_intrinsics(scene)
    k_native = np.diag([AVA_WIDTH / width, AVA_HEIGHT / height, 1.0]) @ k_image
    n = len(scene.dome.camera_ids)
    dome = Dome(
        [_serial(c) for c in scene.dome.camera_ids], np.repeat(k_native[None], n, 0), scene.dome.w2c_mm
    )
    return dataclasses.replace(scene, dome=dome, height=height, width=width)


def _sequences(cfg: SyntheticConfig, scene: SubjectScene) -> list[tuple[str, list[int]]]:
    """(sequence name, timeline indices) per segment, in capture order."""
    out: list[tuple[str, list[int]]] = []
    for segment in cfg.segments:
        indices = [i for i, s in enumerate(scene.timeline.segments) if s == segment]
        out.append((nersemble_sequence(segment), indices))
    return out


def reader_frame_ids(cfg: SyntheticConfig, scene: SubjectScene) -> np.ndarray:
    """The NeRSemble reader's frame id of every timeline frame (sequence number * 100000 + t)."""
    ids = np.zeros(len(scene.timeline.frame_ids), dtype=np.int64)
    names = [name for name, _ in _sequences(cfg, scene)]
    for name, indices in _sequences(cfg, scene):
        for t, i in enumerate(indices):
            ids[i] = frame_id(sequence_number(name, names), t)
    return ids


def write_video(path: Path, frames: list[np.ndarray], fps: int = FPS, crf: int = CRF) -> None:
    """H.264 mp4 through imageio-ffmpeg: yuv420p, no resizing to macro blocks, one thread (same bytes)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        path,
        format="FFMPEG",  # type: ignore[arg-type]
        fps=fps,
        codec="libx264",
        quality=None,
        pixelformat="yuv420p",
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-threads", "1", "-fflags", "+bitexact"],
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def write_benchmark_tracking(
    path: Path,
    head_to_world: np.ndarray,
    scale: float = 1.0,
    expression: np.ndarray | None = None,
    jaw: np.ndarray | None = None,
    eyes: np.ndarray | None = None,
) -> None:
    """A `flame2023_tracking_v2.npz` in the benchmark's format whose model-to-world is
    ``[scale R | t]`` for the given rigid (T, 4, 4) head-to-world poses (Euler 'XYZ', as dreifus)."""
    poses = np.asarray(head_to_world, dtype=np.float64)
    n = len(poses)
    rotation = Rotation.from_matrix(poses[:, :3, :3]).as_euler("XYZ")
    arrays = {
        "shape": np.zeros((1, 300), np.float32),
        "expression": np.zeros((n, 100), np.float32)
        if expression is None
        else np.asarray(expression, np.float32),
        "rotation": rotation.astype(np.float64),
        "rotation_matrices": poses[:, :3, :3].astype(np.float64),
        "translation": poses[:, :3, 3].astype(np.float64),
        "jaw": np.zeros((n, 3), np.float32) if jaw is None else np.asarray(jaw, np.float32),
        "neck": np.zeros((n, 3), np.float32),
        "eyes": np.zeros((n, 6), np.float32) if eyes is None else np.asarray(eyes, np.float32),
        "frames": np.arange(n, dtype=np.int64),
        "scale": np.full((1, 1), scale, np.float64),
    }
    save_npz(path, **arrays)


def _write_subject(root: Path, gt: Path, cfg: SyntheticConfig, pid: str, tracking: bool) -> None:
    scene = nersemble_scene(cfg, pid)
    folder = root / pid
    dome, timeline = scene.dome, scene.timeline
    w2c_m = dome.w2c_mm.copy()
    w2c_m[:, :3, 3] /= 1000.0
    calibration = {
        "intrinsics": shared_intrinsics(scene).tolist(),
        "world_2_cam": {serial: w2c_m[c].tolist() for c, serial in enumerate(dome.camera_ids)},
    }
    (folder / "calibration").mkdir(parents=True, exist_ok=True)
    (folder / "calibration" / "camera_params.json").write_text(json.dumps(calibration, indent=1) + "\n")

    h2w_m = timeline.head_to_world_mm.copy()
    h2w_m[:, :3, 3] /= 1000.0
    sequences = _sequences(cfg, scene)
    gt.mkdir(parents=True, exist_ok=True)
    for c, serial in enumerate(dome.camera_ids):
        plate = clean_plate(scene, c)
        plate_u8 = to_uint8_with_noise(plate, subject_rng(cfg, pid, f"plate/{serial}"))
        plate_path = folder / "sequences" / BACKGROUND / f"image_{serial}.jpg"
        plate_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(plate_u8).save(plate_path, quality=PLATE_QUALITY)
        n = len(timeline.frame_ids)
        image = np.zeros((n, scene.height, scene.width, 3), np.uint8)
        alpha = np.zeros((n, scene.height, scene.width), np.uint8)
        depth = np.zeros((n, scene.height, scene.width), np.float32)
        tracked = np.zeros((n, scene.height, scene.width), bool)
        for name, indices in sequences:
            for i in indices:
                out = render_frame(scene, c, i, plate, subject_rng(cfg, pid, f"noise/{serial}/{i}"))
                image[i], alpha[i], depth[i], tracked[i] = out.image, out.alpha, out.depth_m, out.tracked
            write_video(
                folder / "sequences" / name / "images" / f"cam_{serial}.mp4", [image[i] for i in indices]
            )
        save_npz(gt / f"cam{serial}.npz", image=image, alpha=alpha, depth=depth, tracked=tracked)
    if tracking:
        for name, indices in sequences:
            write_benchmark_tracking(
                folder / "sequences" / name / "tracking" / "flame2023_tracking_v2.npz",
                h2w_m[indices],
                1.0,
                flame_expression(timeline.weights[indices]),
            )
        # The same codes as GAGAvatar's tracker would write them, one video per sequence, as the paper
        # drives its NeRSemble avatars (expression_source flame_gagavatar, flame_video "{sequence}")
        order = [i for _, indices in sequences for i in indices]
        names = [name for name, indices in sequences for _ in indices]
        write_gagavatar_tracking(
            root / GAGAVATAR_TRACKING.format(subject=pid), names, timeline.weights[order]
        )

    k_image = np.stack([scene.k_image(c) for c in range(len(dome.camera_ids))])
    save_npz(gt / "cameras.npz", camera_ids=np.array(dome.camera_ids), K=k_image, w2c=w2c_m)
    ids = reader_frame_ids(cfg, scene)
    save_npz(gt / "head_pose.npz", frame_ids=ids, head_to_world=h2w_m)
    np.save(gt / "blend_weights.npy", timeline.weights.astype(np.float32))
    meta = {
        "subject": pid,
        "layout": "nersemble",
        "frame_ids": [int(f) for f in ids],
        "frame_segments": [nersemble_sequence(s) for s in timeline.segments],
        "sequences": [name for name, _ in sequences],
        "camera_ids": dome.camera_ids,
        "image_size": [scene.height, scene.width],
        "downsample": cfg.downsample,
        "blend_weight_names": list(BLEND_WEIGHT_NAMES),
        "head_center_world": (HEAD_CENTRE_MM / 1000.0).tolist(),
        "units": {"groundtruth": "metres", "capture": "metres"},
        "tracking": tracking,
        "seed": cfg.seed,
    }
    (gt / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def generate_synthetic_nersemble(
    root: Path, groundtruth: Path, cfg: SyntheticConfig, tracking: bool = False, progress: bool = True
) -> None:
    """Write every subject in the NeRSemble v2 layout under `root`, ground truth under `groundtruth`
    (both renamed into place at the end, like the Ava-256 writer). Single process: video encoding is the
    cost and x264 runs one thread per video for reproducible bytes."""
    from tqdm import tqdm

    with (
        atomic_path(root, directory=True) as partial_root,
        atomic_path(groundtruth, directory=True) as partial_groundtruth,
    ):
        for pid in tqdm(
            synthetic_nersemble_subject_ids(cfg), disable=not progress, desc="synthetic NeRSemble"
        ):
            _write_subject(partial_root, partial_groundtruth / pid, cfg, pid, tracking)

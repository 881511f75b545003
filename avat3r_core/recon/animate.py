"""Driving an avatar: encode 4 input views once, then render a sequence of expression codes to a video.

The paper's driving mode: everything up to the cross-attention layers depends only on the input views, so
:func:`build_avatar` runs :meth:`Avat3rModel.encode` exactly once and keeps the result (the cache); every
frame after that is :meth:`Avat3rModel.decode` of the cache with that frame's expression code (batches of
expressions share the batch-1 cache by broadcasting) plus splatting of the frame's Gaussians into a camera.

Cameras are a :class:`CameraPath`: one camera (fixed viewpoint) or one per frame, e.g.
:func:`orbit_cameras`, a swing (or full circle) around the head centre with a supervision camera's focal
lengths. The head centre is where the input crops' central rays meet (:func:`head_centre`): the crop stage
centres every input window on the projected head centre, so no capture metadata beyond the shards is needed.

:func:`write_mp4` writes H.264 through imageio + imageio-ffmpeg, atomically (a temporary sibling renamed
into place), padding odd frame sizes to even ones with edge pixels (yuv420p needs even sizes; imageio's
default would rescale to multiples of 16 instead).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from avat3r_core.errors import Avat3rError
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.evaluate import load_trained_model
from avat3r_core.recon.model import Avat3rModel, EncodedViews
from avat3r_core.recon.predict import scene_gaussians, to_uint8
from avat3r_core.render import render
from avat3r_core.store.atomic import atomic_path
from avat3r_core.store.zarr_store import open_store

__all__ = [
    "AnimateError",
    "Avatar",
    "CameraPath",
    "animate",
    "animate_created",
    "build_avatar",
    "contact_sheet",
    "drive",
    "head_centre",
    "load_expressions",
    "orbit_cameras",
    "render_sequence",
    "write_mp4",
]


class AnimateError(Avat3rError):
    """Driving inputs are wrong (expression file, subject, camera) or the video cannot be written."""


# ---------------------------------------------------------------------------------------------- avatar


@dataclass
class Avatar:
    """One encoded avatar: the model, its batch-1 driving cache and the input cameras it was built from."""

    model: Avat3rModel
    cache: EncodedViews
    input_K: torch.Tensor  # (V, 3, 3) pixel intrinsics of the input crops
    input_w2c: torch.Tensor  # (V, 4, 4) head-centric world-to-camera
    input_size: int
    subject: str | None = None
    autocast: bool = False  # bf16 autocast around decode (CUDA)

    @property
    def device(self) -> torch.device:
        return self.cache.tokens.device

    def head_centre(self) -> torch.Tensor:
        """(3,) head-centric point where the input crops' central rays meet (float64, CPU)."""
        return head_centre(self.input_K, self.input_w2c, self.input_size, self.input_size)


def _autocast(device: torch.device, enabled: bool) -> Any:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def build_avatar(model: Avat3rModel, sample: Mapping[str, Any], *, autocast: bool | None = None) -> Avatar:
    """Run ``model.encode`` once on one sample's input views and keep the cache.

    ``sample`` is a loader item (``Avat3rShardDataset[i]``, fields without a batch dimension) or a collated
    batch of size 1. Only the input-view fields are read (``input_rgb``, ``plucker``, ``position``,
    ``confidence``, ``features``, ``input_K``, ``input_w2c``); they are moved to the model's device.
    ``autocast`` (default: on for CUDA): bf16 autocast for encode and later decodes, as in training.
    """
    device = next(model.parameters()).device
    rgb = sample["input_rgb"]
    batched = rgb.ndim == 5
    if batched and rgb.shape[0] != 1:
        raise ValueError(f"an avatar is built from one sample, got a batch of {rgb.shape[0]}")
    keys = ("input_rgb", "plucker", "position", "confidence", "features", "input_K", "input_w2c")
    batch = {
        k: (sample[k] if batched else sample[k][None]).to(device)
        for k in keys
        if isinstance(sample.get(k), torch.Tensor)
    }
    use_amp = device.type == "cuda" if autocast is None else bool(autocast)
    model.eval()
    with _autocast(device, use_amp):
        cache = model.encode(batch)
    subject = sample.get("subject")
    if isinstance(subject, list | tuple):
        subject = subject[0]
    return Avatar(
        model=model,
        cache=cache,
        input_K=batch["input_K"][0].detach().cpu(),
        input_w2c=batch["input_w2c"][0].detach().cpu(),
        input_size=int(rgb.shape[-1]),
        subject=None if subject is None else str(subject),
        autocast=use_amp,
    )


# --------------------------------------------------------------------------------------------- cameras


@dataclass
class CameraPath:
    """N cameras of one image size; frame t of a sequence uses camera ``t % N`` (N = 1: a fixed camera)."""

    K: torch.Tensor  # (N, 3, 3)
    w2c: torch.Tensor  # (N, 4, 4)
    width: int
    height: int

    def __post_init__(self) -> None:
        K = torch.as_tensor(self.K, dtype=torch.float32)
        w2c = torch.as_tensor(self.w2c, dtype=torch.float32)
        K = K[None] if K.ndim == 2 else K
        w2c = w2c[None] if w2c.ndim == 2 else w2c
        if K.shape[1:] != (3, 3) or w2c.shape[1:] != (4, 4) or K.shape[0] != w2c.shape[0]:
            raise ValueError(
                f"cameras need K (N, 3, 3) and w2c (N, 4, 4), got {tuple(K.shape)} and {tuple(w2c.shape)}"
            )
        self.K, self.w2c = K, w2c
        self.width, self.height = int(self.width), int(self.height)

    def __len__(self) -> int:
        return int(self.K.shape[0])

    def frames(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K (n, 3, 3) and w2c (n, 4, 4) of frames ``start..stop-1``."""
        rows = torch.arange(start, stop) % len(self)
        return self.K[rows], self.w2c[rows]


def as_camera_path(cameras: CameraPath | Sequence[Any]) -> CameraPath:
    """A :class:`CameraPath`, or a tuple ``(K, w2c, size)`` with size an int or ``(width, height)``."""
    if isinstance(cameras, CameraPath):
        return cameras
    K, w2c, size = cameras
    width, height = (size, size) if isinstance(size, int | np.integer) else size
    return CameraPath(K=K, w2c=w2c, width=width, height=height)


def head_centre(K: torch.Tensor, w2c: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Least-squares meeting point (3,) of the rays through the image centres of cameras (K, w2c).

    The crop stage centres every input crop on the projected head centre, so for the input cameras of a
    sample this recovers the head centre (to the half-pixel rounding of the window).
    """
    K64 = torch.as_tensor(K, dtype=torch.float64).cpu().reshape(-1, 3, 3)
    w2c64 = torch.as_tensor(w2c, dtype=torch.float64).cpu().reshape(-1, 4, 4)
    if len(K64) < 2 or len(K64) != len(w2c64):
        raise ValueError(f"the head centre needs >= 2 cameras, got K {len(K64)} and w2c {len(w2c64)}")
    rotation, translation = w2c64[:, :3, :3], w2c64[:, :3, 3]
    origins = -torch.einsum("nji,nj->ni", rotation, translation)
    pixel = torch.tensor([width / 2.0, height / 2.0, 1.0], dtype=torch.float64)
    directions = torch.einsum("nji,nj->ni", rotation, torch.linalg.solve(K64, pixel.expand(len(K64), 3)))
    directions = directions / directions.norm(dim=1, keepdim=True)
    projectors = torch.eye(3, dtype=torch.float64) - directions[:, :, None] * directions[:, None, :]
    lhs = projectors.sum(0)
    rhs = torch.einsum("nij,nj->i", projectors, origins)
    return torch.linalg.solve(lhs, rhs)


def orbit_cameras(
    K: torch.Tensor | np.ndarray,
    w2c: torch.Tensor | np.ndarray,
    width: int,
    height: int,
    centre: torch.Tensor | np.ndarray,
    frames: int,
    *,
    degrees: float = 30.0,
    full_circle: bool = False,
) -> CameraPath:
    """Cameras orbiting ``centre`` about the reference camera's up axis, all looking at the centre.

    The reference camera (K (3, 3), w2c (4, 4), e.g. a supervision camera) gives the focal lengths, the
    distance to the centre and the up direction; the principal point is moved to the image centre, so the
    head centre projects there in every frame. ``frames`` cameras: a swing of +-``degrees`` (one sine
    period, so the video loops) or, with ``full_circle``, a full turn starting at the reference view.
    """
    if frames < 1:
        raise ValueError(f"an orbit needs at least one frame, got {frames}")
    K = np.asarray(torch.as_tensor(K, dtype=torch.float64).cpu())
    w2c = np.asarray(torch.as_tensor(w2c, dtype=torch.float64).cpu())
    centre = np.asarray(torch.as_tensor(centre, dtype=torch.float64).cpu()).reshape(3)
    rotation = w2c[:3, :3]
    eye = -rotation.T @ w2c[:3, 3]
    up = -rotation[1]  # world direction of the image's up (OpenCV y points down)
    offset = eye - centre
    phases = np.arange(frames) / frames
    angles = 2 * np.pi * phases if full_circle else np.radians(degrees) * np.sin(2 * np.pi * phases)
    intrinsics = K.copy()
    intrinsics[0, 2], intrinsics[1, 2] = width / 2.0, height / 2.0
    matrices = []
    for angle in angles:
        # Rodrigues rotation of the offset about `up`.
        c, s = math.cos(angle), math.sin(angle)
        rotated = offset * c + np.cross(up, offset) * s + up * np.dot(up, offset) * (1 - c)
        matrices.append(look_at_w2c(centre + rotated, centre, up))
    return CameraPath(
        K=torch.from_numpy(np.repeat(intrinsics[None], frames, 0)).float(),
        w2c=torch.from_numpy(np.stack(matrices)).float(),
        width=width,
        height=height,
    )


# ----------------------------------------------------------------------------------------------- drive


def _check_expressions(expressions: torch.Tensor | np.ndarray, dim: int) -> torch.Tensor:
    codes = expressions if torch.is_tensor(expressions) else torch.from_numpy(np.asarray(expressions))
    if codes.ndim != 2 or codes.shape[1] != dim or codes.shape[0] < 1:
        raise ValueError(f"expression codes must be (T, {dim}) with T >= 1, got {tuple(codes.shape)}")
    if not torch.isfinite(codes).all():
        raise ValueError("expression codes contain NaN or infinite values")
    return codes.float()


@torch.no_grad()
def render_sequence(
    avatar: Avatar,
    expressions: torch.Tensor | np.ndarray,
    cameras: CameraPath | Sequence[Any],
    *,
    batch: int = 8,
    background: torch.Tensor | Sequence[float] | None = None,
    backend: str = "auto",
) -> Iterator[torch.Tensor]:
    """Decode the cached avatar with ``batch`` expressions at a time and render every frame's Gaussians.

    Yields float32 (n, 3, H, W) in [0, 1] (background composited) per batch, on the avatar's device.
    ``model.encode`` is never called: the cache of :func:`build_avatar` is broadcast over each batch.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    model = avatar.model
    codes = _check_expressions(expressions, model.config.expression_dim).to(avatar.device)
    path = as_camera_path(cameras)
    device = avatar.device
    bg = None if background is None else torch.as_tensor(background, dtype=torch.float32, device=device)
    for start in range(0, codes.shape[0], batch):
        stop = min(start + batch, codes.shape[0])
        with _autocast(device, avatar.autocast):
            maps = model.decode(avatar.cache, codes[start:stop])
        K, w2c = path.frames(start, stop)
        images = []
        with torch.autocast(device_type=device.type, enabled=False):
            for b in range(stop - start):
                out = render(
                    scene_gaussians(maps, b),
                    K[b : b + 1].to(device),
                    w2c[b : b + 1].to(device),
                    width=path.width,
                    height=path.height,
                    background=bg,
                    backend=backend,
                )
                images.append(out.rgb[0])
        yield torch.stack(images)


def drive(
    avatar: Avatar,
    expressions: torch.Tensor | np.ndarray,
    cameras: CameraPath | Sequence[Any],
    *,
    batch: int = 8,
    background: torch.Tensor | Sequence[float] | None = None,
    backend: str = "auto",
    progress: Any = None,
) -> np.ndarray:
    """Frames uint8 (T, H, W, 3) of the avatar driven by expression codes (T, E) seen through ``cameras``.

    ``cameras``: a :class:`CameraPath` (frame t uses camera ``t % N``) or ``(K, w2c, size)``.
    ``progress``: an optional callable receiving the number of frames done after each batch.
    """
    frames = []
    for images in render_sequence(
        avatar, expressions, cameras, batch=batch, background=background, backend=backend
    ):
        frames.append(to_uint8(images))
        if progress is not None:
            progress(len(images))
    return np.concatenate(frames)


# ----------------------------------------------------------------------------------------------- video


def _pad_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_mp4(frames: np.ndarray, path: str | Path, fps: float = 7.5, *, quality: int = 8) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 mp4 (yuv420p), atomically.

    Odd heights or widths are padded by one edge row/column (yuv420p needs even sizes). Needs the
    ``imageio-ffmpeg`` package (its wheel bundles an ffmpeg binary); without it a :class:`AnimateError` says
    what to install.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise AnimateError(
            f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
        )
    if not fps > 0:
        raise AnimateError(f"fps must be positive, got {fps}")
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg plugin's backend; checked here for a clear error)
    except ImportError as exc:
        raise AnimateError(
            f"writing {path} needs imageio and imageio-ffmpeg ({exc.name} is missing): "
            "pip install imageio imageio-ffmpeg"
        ) from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=".mp4", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        writer = imageio.get_writer(
            temporary,
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec="libx264",
            pixelformat="yuv420p",
            quality=quality,
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        try:
            for frame in _pad_even(frames):
                writer.append_data(frame)
        finally:
            writer.close()
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def contact_sheet(frames: np.ndarray, count: int = 6, columns: int = 6) -> np.ndarray:
    """``count`` evenly spaced frames (first and last included) tiled into one uint8 picture."""
    count = max(1, min(count, len(frames)))
    picks = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
    tiles = [frames[i] for i in picks]
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (rows * columns - len(tiles))
    lines = [np.concatenate(tiles[r * columns : (r + 1) * columns], axis=1) for r in range(rows)]
    return np.concatenate(lines, axis=0)


# --------------------------------------------------------------------------------------- from the shards


def load_expressions(spec: str | Path, dataset: Any, subject: str, dim: int = 256) -> np.ndarray:
    """Expression codes (T, dim): ``"shard"`` or a ``.npy`` file of shape (T, dim).

    ``shard``: the subject's codes of its supervision timesteps in order (those with a valid camera, the
    timesteps the loader draws targets from), read from shard.zarr ``expression_codes`` via ``frames``.
    """
    if str(spec) == "shard":
        meta = dataset.subjects[[s.name for s in dataset.subjects].index(subject)]
        codes = open_store(meta.stores["shard"])["expression_codes"][...]
        rows = [meta.code_row[int(meta.supervision_frames[t])] for t in meta.targets]
        codes = np.asarray(codes[rows], dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != dim or not len(codes):
            raise AnimateError(
                f"subject {subject}: shard {meta.stores['shard']} expression_codes give shape "
                f"{tuple(codes.shape)}, the model expects (T, {dim})"
            )
        return codes
    path = Path(spec)
    if not path.is_file():
        raise AnimateError(f"expression file {path} does not exist (give 'shard' or a .npy of (T, {dim}))")
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AnimateError(f"expression file {path} is not a readable .npy array: {exc}") from None
    if codes.ndim != 2 or codes.shape[1] != dim or codes.shape[0] < 1:
        raise AnimateError(
            f"expression file {path} has shape {tuple(codes.shape)}, expected (T, {dim}) with T >= 1"
        )
    if not np.issubdtype(codes.dtype, np.number) or not np.isfinite(codes).all():
        raise AnimateError(f"expression file {path} holds non-numeric, NaN or infinite values")
    return codes.astype(np.float32)


def _subject_and_split(index: Path, subject: str | None) -> tuple[str, str]:
    """The named subject (default: the first test subject of the index) and its split."""
    subjects = json.loads(Path(index).read_text())["subjects"]
    if subject is None:
        test = sorted(s for s, entry in subjects.items() if entry.get("split") == "test")
        if not test:
            raise AnimateError(f"dataset index {index} has no test subject; name one with --subject")
        subject = test[0]
    if subject not in subjects:
        raise AnimateError(
            f"subject {subject} is not in the dataset index {index} (it has {', '.join(sorted(subjects))})"
        )
    return subject, str(subjects[subject].get("split"))


def _camera_path(
    dataset: Any, subject: str, camera: str, avatar: Avatar, frames: int, *, degrees: float = 30.0
) -> tuple[CameraPath, str]:
    """A fixed supervision camera by id (at its first valid timestep), or an orbit around the head."""
    meta = dataset.subjects[[s.name for s in dataset.subjects].index(subject)]
    crops = open_store(meta.stores["crops"])
    size = meta.supervision_size
    ids = meta.supervision_cameras
    all_K, all_w2c = crops["supervision/K"][...], crops["supervision/w2c_head"][...]
    if camera == "orbit":
        # Reference view: the supervision camera (at its first valid timestep) whose direction from the head
        # centre is closest to the mean direction of the input cameras.
        centre = avatar.head_centre().numpy()

        def direction(w2c: np.ndarray) -> np.ndarray:
            eye = -w2c[:3, :3].T @ w2c[:3, 3] - centre
            return eye / np.linalg.norm(eye)

        mean = np.mean([direction(m) for m in avatar.input_w2c.double().numpy()], axis=0)
        usable = [(c, int(np.flatnonzero(v)[0])) for c, v in enumerate(meta.supervision_valid) if v.any()]
        c, t = max(usable, key=lambda ct: float(direction(all_w2c[ct]) @ mean))
        path = orbit_cameras(all_K[c, t], all_w2c[c, t], size, size, centre, frames, degrees=degrees)
        return path, f"orbit of +-{degrees:g} degrees around the head centre, intrinsics of camera {ids[c]}"
    if camera not in ids:
        raise AnimateError(
            f"camera {camera} is not a supervision camera of subject {subject} "
            f"(give 'orbit' or one of {', '.join(ids)})"
        )
    c = ids.index(camera)
    valid = np.flatnonzero(meta.supervision_valid[c])
    if not valid.size:
        raise AnimateError(f"camera {camera} of subject {subject} has no valid supervision timestep")
    t = int(valid[0])
    path = CameraPath(
        K=torch.from_numpy(all_K[c, t]), w2c=torch.from_numpy(all_w2c[c, t]), width=size, height=size
    )
    return path, f"camera {camera} (head-centric pose of frame {int(meta.supervision_frames[t])})"


def write_video_and_sheet(frames: np.ndarray, out: Path, fps: float, sheet_frames: int) -> Path:
    """The mp4 at `out` and a contact sheet of `sheet_frames` frames beside it (`<stem>_frames.png`)."""
    write_mp4(frames, out, fps)
    sheet = out.with_name(f"{out.stem}_frames.png")
    with atomic_path(sheet) as temporary:
        Image.fromarray(contact_sheet(frames, sheet_frames)).save(temporary, format="PNG")
    return sheet


def animate(
    model_path: str | Path,
    index: str | Path | None,
    out: str | Path,
    *,
    avatar: str | Path | None = None,
    subject: str | None = None,
    expressions: str | Path = "shard",
    camera: str = "orbit",
    fps: float = 7.5,
    seed: int = 0,
    batch: int = 8,
    renderer: str = "auto",
    device: str | None = None,
    sheet_frames: int = 6,
) -> dict[str, Any]:
    """Build the avatar of ``subject`` from one sample's input views and render an expression sequence.

    The input views are those of the subject's first item in the loader (``Avat3rShardDataset`` of the
    subject's split, the model's ``n_views``, ``seed``), so a rerun uses the same 4 views. Writes ``out``
    (mp4) and a contact sheet ``<out stem>_frames.png`` next to it; returns a summary.

    ``avatar``: instead of a subject of the dataset index, the folder written by ``avat3r create`` (its
    input views are used as they are; ``index`` must then be None, see :func:`animate_created`).
    """
    if avatar is not None:
        if index is not None:
            raise AnimateError(
                "give either a dataset index (--index) or an avatar folder (--avatar), not both"
            )
        return animate_created(
            model_path,
            avatar,
            out,
            expressions=expressions,
            camera=camera,
            fps=fps,
            batch=batch,
            renderer=renderer,
            device=device,
            sheet_frames=sheet_frames,
        )
    if index is None:
        raise AnimateError("animate needs a dataset index (--index) or an avatar folder (--avatar)")
    index, out = Path(index), Path(out)
    subject, split = _subject_and_split(index, subject)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(model_path, torch_device)
    n_views = int(config["train"]["n_views"])
    dataset = Avat3rShardDataset(index, split=split, n_views=n_views, n_supervision=1, seed=seed)
    names = [s.name for s in dataset.subjects]
    items = (i for i in range(len(dataset)) if names[dataset.draw(i)["subject"]] == subject)
    item = next(items, None)
    if item is None:
        raise AnimateError(f"subject {subject} has no sample in the dataset index {index}")
    sample = dataset[item]
    codes = load_expressions(expressions, dataset, subject, model.config.expression_dim)

    start = time.perf_counter()
    avatar = build_avatar(model, sample)
    created = time.perf_counter() - start
    path, camera_text = _camera_path(dataset, subject, camera, avatar, len(codes))
    start = time.perf_counter()
    frames = drive(
        avatar,
        codes,
        path,
        batch=batch,
        background=config["train"].get("background"),
        backend=renderer,
    )
    driving = time.perf_counter() - start
    cameras = dataset.camera_ids(subject, "input")
    inputs = [
        f"{cameras[int(c)]}@{int(f)}"
        for c, f in zip(sample["input_camera_index"], sample["input_frames"], strict=True)
    ]
    return _drive_summary(
        subject,
        frames,
        out,
        fps,
        sheet_frames,
        camera_text,
        expressions,
        inputs,
        torch_device,
        created,
        driving,
    )


def _drive_summary(
    subject: str,
    frames: np.ndarray,
    out: Path,
    fps: float,
    sheet_frames: int,
    camera_text: str,
    expressions: object,
    inputs: list[str],
    device: torch.device,
    encode_s: float,
    drive_s: float,
    **extra: object,
) -> dict[str, Any]:
    """Write the video and its contact sheet; the run's summary (the same keys for a dataset subject and an
    avatar made by `avat3r create`, `extra` after `inputs`)."""
    sheet = write_video_and_sheet(frames, out, fps, sheet_frames)
    return {
        "subject": subject,
        "frames": len(frames),
        "size": [int(frames.shape[2]), int(frames.shape[1])],
        "fps": float(fps),
        "video": str(out),
        "contact_sheet": str(sheet),
        "camera": camera_text,
        "expressions": str(expressions),
        "inputs": inputs,
        **extra,
        "device": str(device),
        "encode_s": encode_s,
        "drive_fps": len(frames) / drive_s,
    }


# ------------------------------------------------------------------------------- from `avat3r create`


def _created_camera_path(
    avatar: Avatar, camera: str, frames: int, *, degrees: float = 30.0
) -> tuple[CameraPath, str]:
    """An orbit around the head-frame origin (the head centre) or one input camera (``input<k>``)."""
    size = avatar.input_size
    if camera == "orbit":
        eyes = -torch.einsum(
            "nji,nj->ni", avatar.input_w2c[:, :3, :3].double(), avatar.input_w2c[:, :3, 3].double()
        )
        forward = eyes[:, 2] / eyes.norm(dim=1).clamp_min(1e-12)  # cosine to the head's +z
        k = int(torch.argmax(forward))
        path = orbit_cameras(
            avatar.input_K[k], avatar.input_w2c[k], size, size, np.zeros(3), frames, degrees=degrees
        )
        return path, f"orbit of +-{degrees:g} degrees around the head centre from input view {k}"
    views = len(avatar.input_K)
    name = camera[len("input") :] if camera.startswith("input") else camera
    if not name.isdigit() or int(name) >= views:
        raise AnimateError(
            f"camera {camera!r} is not available for a created avatar "
            f"(give 'orbit' or input0..input{views - 1})"
        )
    k = int(name)
    path = CameraPath(K=avatar.input_K[k], w2c=avatar.input_w2c[k], width=size, height=size)
    return path, f"input view {k}"


def animate_created(
    model_path: str | Path,
    avatar_dir: str | Path,
    out: str | Path,
    *,
    expressions: str | Path = "shard",
    camera: str = "orbit",
    fps: float = 7.5,
    batch: int = 8,
    renderer: str = "auto",
    device: str | None = None,
    sheet_frames: int = 6,
) -> dict[str, Any]:
    """Drive an avatar folder written by ``avat3r create`` with a .npy of expression codes (T, E).

    The folder's ``avatar.pt`` holds the input views in the loader's layout; they are encoded once
    (:func:`build_avatar`) and every code decoded and rendered from ``camera`` (``orbit`` around the head
    centre, the head frame's origin, or ``input<k>``) at the input crop size.
    """
    from avat3r_core.create.pipeline import load_created_avatar

    out = Path(out)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(model_path, torch_device)
    sample, created = load_created_avatar(avatar_dir)
    if str(expressions) == "shard":
        raise AnimateError(
            f"avatar {avatar_dir} was made from photos and has no shard of expression codes: give "
            f"--expressions a .npy of shape (T, {model.config.expression_dim})"
        )
    codes = load_expressions(expressions, None, "", model.config.expression_dim)
    start = time.perf_counter()
    try:
        avatar = build_avatar(model, sample)
    except ValueError as exc:
        raise AnimateError(f"avatar {avatar_dir} does not fit the model {model_path}: {exc}") from None
    created_s = time.perf_counter() - start
    path, camera_text = _created_camera_path(avatar, camera, len(codes))
    start = time.perf_counter()
    frames = drive(
        avatar, codes, path, batch=batch, background=config["train"].get("background"), backend=renderer
    )
    driving = time.perf_counter() - start
    return _drive_summary(
        str(sample["subject"]),
        frames,
        out,
        fps,
        sheet_frames,
        camera_text,
        expressions,
        list(created.get("photos", [])),
        torch_device,
        created_s,
        driving,
        random_weights=list(created.get("random_weights", [])),
    )

"""Configuration of the synthetic capture and the pure functions derived from it.

Everything here is a function of the config alone (no disk access), because the workflow has to know the
subject ids and folder names before the capture exists (Snakemake resolves its DAG from them).
"""

from __future__ import annotations

import datetime as _dt
import math
import zlib
from dataclasses import dataclass

import numpy as np

NATIVE_HEIGHT = 4096
"""Ava-256 native sensor height in pixels (portrait)."""
NATIVE_WIDTH = 2668
"""Ava-256 native sensor width in pixels."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and randomness of a synthetic Ava-256-layout capture.

    The defaults give a capture that the whole CPU pipeline can chew through in minutes while still having
    every structural feature of the real release: several subjects, cameras all around the head, the three
    input segments of the Avat3r recipe plus the neutral and hold-out segments, and dropped images.
    """

    n_subjects: int = 3
    n_cameras: int = 16
    frames_per_segment: int = 12
    segments: tuple[str, ...] = (
        "EXP_eye_wide",
        "EXP_tongue001",
        "EXP_jaw003",
        "EXP_neutral_peak",
        "EXP_free_face",
    )
    downsample: int = 16
    missing_fraction: float = 0.001
    min_missing: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_subjects < 1 or self.n_subjects > 26**3:
            raise ValueError(f"n_subjects must be in 1..{26**3}, got {self.n_subjects}")
        if self.n_cameras < 2 or self.n_cameras > 999:
            raise ValueError(f"n_cameras must be in 2..999, got {self.n_cameras}")
        if self.frames_per_segment < 1:
            raise ValueError("frames_per_segment must be >= 1")
        if not self.segments or len(set(self.segments)) != len(self.segments):
            raise ValueError("segments must be a non-empty tuple of distinct names")
        if int(self.downsample) != self.downsample or self.downsample < 1:
            raise ValueError(f"downsample must be a positive integer, got {self.downsample}")
        if not 0.0 <= self.missing_fraction < 0.5:
            raise ValueError("missing_fraction must be in [0, 0.5)")
        if self.min_missing < 0:
            raise ValueError("min_missing must be >= 0")


def image_size(downsample: int) -> tuple[int, int]:
    """(height, width) of the released images at `downsample` from the native 4096 x 2668 sensor.

    Height is ``4096 // downsample`` (exact for the powers of two the release uses); width is
    ``round(2668 / downsample)`` with round-half-UP written out as ``floor(x + 0.5)`` (Python's ``round``
    rounds half to even), so ds=4 gives 1024 x 667 like the 4TB release and ds=16 gives 256 x 167
    (166.75 -> 167).
    Readers scale the native K by ``W / 2668`` (row 0) and ``H / 4096`` (row 1) using these sizes, and the
    generator renders with exactly that K.
    """
    ds = int(downsample)
    if ds < 1:
        raise ValueError(f"downsample must be >= 1, got {downsample}")
    return NATIVE_HEIGHT // ds, math.floor(NATIVE_WIDTH / ds + 0.5)


def scale_intrinsics(k_native: np.ndarray, height: int, width: int) -> np.ndarray:
    """Native-sensor K scaled to an image of (height, width), the way Ava-256 readers (MATCH) scale it."""
    scale = np.diag([width / NATIVE_WIDTH, height / NATIVE_HEIGHT, 1.0])
    return scale @ np.asarray(k_native, dtype=np.float64)


def _letters(index: int) -> str:
    """Three upper-case letters counting in base 26 (AAA, AAB, ...), the shape of Ava-256 subject ids."""
    a, rest = divmod(index, 26 * 26)
    b, c = divmod(rest, 26)
    return "".join(chr(ord("A") + x) for x in (a, b, c))


def synthetic_subject_ids(cfg: SyntheticConfig) -> list[str]:
    """Subject ids ("AAA001", "AAB002", ...): three letters and three digits like Ava-256's, pure in cfg."""
    return [f"{_letters(i)}{(i + 1) % 1000:03d}" for i in range(cfg.n_subjects)]


def _capture_date_time(cfg: SyntheticConfig, sid: str) -> tuple[str, str]:
    """(mcd, mct): an 8-digit capture date and a 4-digit capture time, deterministic per (seed, subject)."""
    index = synthetic_subject_ids(cfg).index(sid)
    day = _dt.date(2023, 4, 5) + _dt.timedelta(days=3 * index + (cfg.seed % 7))
    minutes = (9 * 60 + 37 * index + 11 * (cfg.seed % 13)) % (10 * 60) + 8 * 60  # between 08:00 and 17:59
    return day.strftime("%Y%m%d"), f"{minutes // 60:02d}{minutes % 60:02d}"


def synthetic_capture_folder(cfg: SyntheticConfig, sid: str) -> str:
    """Capture folder name ``{mcd}--{mct}--{sid}`` as the Ava-256 download writes it; pure in cfg."""
    if sid not in synthetic_subject_ids(cfg):
        raise KeyError(f"{sid!r} is not a subject of this synthetic config")
    mcd, mct = _capture_date_time(cfg, sid)
    return f"{mcd}--{mct}--{sid}"


def subject_rng(cfg: SyntheticConfig, sid: str, purpose: str) -> np.random.Generator:
    """A generator seeded by (cfg.seed, subject, purpose): each part of a subject is reproducible alone.

    zlib.crc32 instead of hash(): Python salts str hashes per process, which would break determinism across
    worker processes.
    """
    key = [int(cfg.seed) & 0xFFFFFFFF, zlib.crc32(sid.encode()), zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def shared_rng(cfg: SyntheticConfig, purpose: str) -> np.random.Generator:
    """A generator shared by all subjects (the dome, the camera ids), seeded by (cfg.seed, purpose)."""
    key = [int(cfg.seed) & 0xFFFFFFFF, 0x5EED, zlib.crc32(purpose.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))

"""One interface over the matting backends, so the matting stage is the same loop whatever mattes.

`make_matter(backend, options)` returns a `Matter`: called on a batch of frames and their clean plates it
gives alpha and, when the backend predicts one, the foreground colour (BGMv2's `fgr`, used by the "fgr"
composite mode). The "dataset" backend (the masks the capture ships) has no computation and is not made
here: the stage reads `reader.mask` and converts it with `mask_to_alpha`.

Options come straight from config.yaml, so unknown names and bad values are ValueErrors that name them; a
value of None means "the backend's default" (YAML `null`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from avat3r_core.matting.plate_difference import (
    PlateDifferenceParams,
    plate_difference_alpha,
    reduce_plate,
)

BACKENDS = ("plate_difference", "bgmv2")
"""Backends `make_matter` builds; "dataset" is the stage's own (see `mask_to_alpha`)."""
BGMV2_OPTIONS = (
    "checkpoint",
    "backbone",
    "refine_mode",
    "backbone_scale",
    "refine_sample_pixels",
    "refine_threshold",
    "batch_size",
    "device",
    "precision",
)


def mask_to_alpha(mask: np.ndarray) -> np.ndarray:
    """A capture-shipped uint8 mask (0..255) -> float32 alpha in [0, 1], plain /255.

    No thresholding: the release's masks are 8-bit AVIF, whose compression leaves values between 0 and 255
    along edges; they are kept as soft alpha like any other backend's.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        raise TypeError(f"mask must be uint8, got {mask.dtype}")
    return mask.astype(np.float32) / np.float32(255.0)


def _check_batch(images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,H,W,3) uint8 images and plates; one plate ((H,W,3) or (1,H,W,3)) is broadcast to all images."""
    for name, array in (("images", images), ("plates", plates)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array, got {getattr(array, 'dtype', type(array))}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (N, H, W, 3), got {images.shape}")
    if plates.ndim == 3:
        plates = plates[None]
    if plates.ndim != 4 or plates.shape[1:] != images.shape[1:] or plates.shape[0] not in (1, len(images)):
        raise ValueError(f"plates {plates.shape} do not match images {images.shape}")
    return images, plates


class Matter:
    """A matting backend ready to run: what the stage logs, needs and gets back.

    Subclasses set `name`, `needs_plate` and `provides_foreground`, and implement `description` and
    `__call__(images, plates) -> (alpha (N,H,W), foreground float32 (N,H,W,3) or None)`, alpha either float32
    in [0, 1] or uint8 0..255 (then it is the stored alpha as it is: `alpha_to_uint8` of the float alpha).
    """

    name: str = ""
    needs_plate: bool = True
    provides_foreground: bool = False
    batched: bool = True
    """Whether the stage should pass a block of images stacked (a network batch) or one image at a time (a
    (1, H, W, 3) view: no stacked copy of the block)."""

    @property
    def description(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError  # pragma: no cover - abstract


class PlateDifferenceMatter(Matter):
    """Classical plate difference (no weights, CPU, one image at a time: ~5-10 ms per image at 256 to 1024 px
    height). Its alpha is uint8 (`plate_difference_alpha`); the plate is reduced once per camera."""

    name = "plate_difference"
    needs_plate = True
    provides_foreground = False
    batched = False

    def __init__(self, params: PlateDifferenceParams) -> None:
        self.params = params
        # The last plate passed (kept alive, so `is` identifies it) and its reduced copy: the stage passes
        # one plate object per camera, image after image, and the plate is reduced once per camera.
        self._plate: np.ndarray | None = None
        self._small_plate: np.ndarray | None = None

    @property
    def description(self) -> str:
        defaults = asdict(PlateDifferenceParams())
        changed = {k: v for k, v in asdict(self.params).items() if defaults[k] != v}
        settings = ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"
        return f"plate difference matting (classical, no weights), {settings}"

    def __call__(self, images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, None]:
        source = plates
        images, plates = _check_batch(images, plates)
        alpha = np.empty(images.shape[:3], dtype=np.uint8)
        small = None
        if len(plates) == 1:
            if source is not self._plate:
                self._plate, self._small_plate = source, reduce_plate(plates[0], self.params)
            small = self._small_plate
        for i, image in enumerate(images):
            plate = plates[i if len(plates) > 1 else 0]
            alpha[i] = plate_difference_alpha(image, plate, self.params, small_plate=small)
        return alpha, None


class BGMv2BackendMatter(Matter):
    """BackgroundMattingV2 (`BGMv2Matter`): alpha and the predicted foreground colour."""

    name = "bgmv2"
    needs_plate = True
    provides_foreground = True

    def __init__(self, **options: Any) -> None:
        from avat3r_core.models.bgmv2 import BGMv2Matter  # torch is imported only when this backend runs

        self.matter = BGMv2Matter(**options)

    @property
    def random_weights(self) -> bool:
        return bool(getattr(self.matter, "random_weights", False))

    @property
    def description(self) -> str:
        """BGMv2Matter's line, which ends in "RANDOM WEIGHTS" for a random checkpoint."""
        return self.matter.description

    def __call__(self, images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, plates = _check_batch(images, plates)
        return self.matter(images, plates)


def _drop_none(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def make_matter(backend: str, options: dict[str, Any] | None = None) -> Matter:
    """Build the backend named `backend` from its config options (see module docstring for the rules)."""
    options = _drop_none(dict(options or {}))
    if backend == "plate_difference":
        return PlateDifferenceMatter(PlateDifferenceParams.from_options(options))
    if backend == "bgmv2":
        unknown = sorted(set(options) - set(BGMV2_OPTIONS))
        if unknown:
            raise ValueError(f"unknown bgmv2 option(s) {unknown}; known: {list(BGMV2_OPTIONS)}")
        if "checkpoint" not in options:
            raise ValueError("bgmv2 option 'checkpoint' is required (path to pytorch_<backbone>.pth)")
        return BGMv2BackendMatter(**options)
    if backend == "dataset":
        raise ValueError(
            "matting backend 'dataset' reads the capture's masks in the stage (mask_to_alpha); "
            "make_matter builds only " + ", ".join(BACKENDS)
        )
    raise ValueError(f"unknown matting backend {backend!r}; choose one of {(*BACKENDS, 'dataset')}")

"""Reading phone photos: any size, any orientation, EXIF orientation honoured, errors that name the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avat3r_core.errors import Avat3rError

__all__ = ["CreateError", "Photo", "load_photo"]

_EXIF_ORIENTATION = 0x0112
MIN_SIDE = 32
"""Photos smaller than this (either side, after orientation) are refused: no head can be found in them."""


class CreateError(Avat3rError):
    """`avat3r create` cannot make an avatar from these inputs; the message names the file."""


@dataclass(frozen=True)
class Photo:
    """One photo as displayed: uint8 RGB (H, W, 3) after EXIF orientation, and where it came from."""

    path: Path
    rgb: np.ndarray
    orientation: int  # the EXIF orientation tag (1 = upright, or absent)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def load_photo(path: str | Path) -> Photo:
    """Decode a photo (JPEG, PNG, HEIF where Pillow reads it, ...), apply its EXIF orientation, drop alpha.

    ``ImageOps.exif_transpose`` rotates/mirrors the pixels as the tag says (phones store sensor-oriented
    pixels and the tag), so every later step sees the photo as its owner saw it. A missing, unreadable or
    tiny file is a :class:`CreateError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CreateError(f"photo {path} does not exist")
    try:
        with Image.open(path) as image:
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            upright = ImageOps.exif_transpose(image)
            rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CreateError(f"photo {path} is not a readable image: {exc}") from None
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise CreateError(
            f"photo {path} is {rgb.shape[1]}x{rgb.shape[0]} px; at least {MIN_SIDE} px per side are needed"
        )
    return Photo(path=path, rgb=rgb, orientation=orientation)

"""Shared drawing helpers for the report figures: fonts, labelled grids of tiles, atomic PNG writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avat3r_core.store.atomic import atomic_path

BACKGROUND = (40, 40, 40)
TEXT = (235, 235, 235)
PAD = 4
LABEL_H = 16
TITLE_LINE_H = 18


def font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_image(array: np.ndarray) -> Image.Image:
    """uint8 (H, W) or (H, W, 3), or float in [0, 1], as an RGB image."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return Image.fromarray(array, "RGB")


def grid_origin(index: int, columns: int, cell: tuple[int, int], title_lines: int) -> tuple[int, int]:
    """Top-left pixel of the first tile of cell `index` (below its label) in `tile_grid`'s layout."""
    width, height = cell
    row, col = divmod(index, columns)
    x = PAD + col * (width + PAD)
    y = PAD + title_lines * TITLE_LINE_H + row * (LABEL_H + height + PAD) + LABEL_H
    return x, y


def tile_grid(
    cells: Sequence[tuple[str, Sequence[np.ndarray]]],
    title: Sequence[str],
    *,
    tile: int,
    columns: int,
) -> Image.Image:
    """Cells of tiles side by side (each tile resized to `tile` x `tile`), a label above each cell and title
    lines on top. Cell i's first tile starts at `grid_origin(i, ...)`, its k-th at `+ k * tile` in x."""
    per_cell = max((len(tiles) for _, tiles in cells), default=1)
    cell = (per_cell * tile, tile)
    columns = max(1, min(columns, len(cells)))
    rows = max(1, -(-len(cells) // columns))
    width = PAD + columns * (cell[0] + PAD)
    height = PAD + len(title) * TITLE_LINE_H + rows * (LABEL_H + tile + PAD)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(width, 2 * PAD + max((int(measure.textlength(t, font=font(13))) for t in title), default=0))
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, line in enumerate(title):
        draw.text((PAD, PAD + i * TITLE_LINE_H), line, fill=TEXT, font=font(13))
    for i, (label, tiles) in enumerate(cells):
        x, y = grid_origin(i, columns, cell, len(title))
        draw.text((x, y - LABEL_H + 1), label, fill=TEXT, font=font(11))
        for k, array in enumerate(tiles):
            image = to_image(array)
            if image.size != (tile, tile):
                image = image.resize((tile, tile), Image.Resampling.BILINEAR)
            sheet.paste(image, (x + k * tile, y))
    return sheet


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write the PNG atomically (a half-written figure never appears at its final path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over range(count) (all of them when there are fewer)."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)}) if wanted > 1 else [0]

"""Matting without a clean plate, and the head in 2D: what `avat3r create` does instead of BGMv2.

Phone photos come without a background plate, so neither of the pipeline's plate-based backends
(``plate_difference``, ``bgmv2``) applies. The documented choice here is a **border background model**:

1. the photo is analysed at <= 256 px (long side); the pixels of its top border and of the upper 60% of its
   left and right borders (strips 4% of the short side wide) are taken as background -- a portrait's bottom
   border and the lower sides usually cut through the body and shoulders, so they are not used;
2. the border colours are summarised by k-means (k = 6, RGB); a pixel's distance to the nearest centre is its
   contrast against the background, and pixels above ``max(30 levels, 2 x the 99th percentile of the border
   pixels' own distances)`` are foreground;
3. an opening and a closing (3x3) remove speckle, the largest connected foreground component is the person,
   its holes are filled; the mask is brought back to full resolution (bilinear, threshold 0.5).

It needs no weights, is deterministic and fails loudly: a photo whose border is not background (a close-up
that fills the frame) or a person that matches the background colour gives no usable component, and that is
the "no detectable head" error naming the photo. Busy, textured backgrounds defeat it (document: shoot against
a plain wall). The DUSt3R confidence is not used for the matte: with untrained test networks it is noise, and
the matte must also locate the head before DUSt3R runs (to choose its input window).

The head in 2D (:func:`detect_head`): the top of the person's silhouette. Scanning down from its top row, the
head band is the smallest height h with ``h >= HEAD_ASPECT * width(h)`` (width = 95th percentile of the
row spans above), i.e. the point where the band is as tall as a head of that breadth: for an elliptic head
that is the chin, before the shoulders widen the rows. Its centre column is the median of the row midpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from avat3r_core.create.photos import CreateError

__all__ = ["HEAD_ASPECT", "HeadDetection", "background_matte", "detect_head"]

ANALYSIS_SIDE = 256
"""Long side (px) at which the matte and the head are computed."""
BORDER_FRACTION = 0.04
SIDE_BORDER_FRACTION = 0.6
"""The left and right border strips stop at this fraction of the height (shoulders reach the sides lower)."""
CLUSTERS = 6
MIN_CONTRAST = 30.0
"""Minimum RGB distance (8-bit levels) from every background colour for a pixel to be foreground."""
MIN_AREA_FRACTION = 0.01
MAX_AREA_FRACTION = 0.9
HEAD_ASPECT = 1.3
"""Head height (chin to crown) / head breadth used to find the chin on the silhouette."""
MIN_HEAD_FRACTION = 0.03
"""A head narrower than this fraction of the photo's short side is "not detectable"."""


@dataclass(frozen=True)
class HeadDetection:
    """The matte and the head of one photo, in the photo's (oriented) pixels.

    ``alpha`` (H, W) float32 in {0, 1}; ``centre`` (u, v) continuous pixel coordinates (pixel-corner
    convention); ``width``/``height`` of the head band in pixels; ``top`` the silhouette's top row (v).
    """

    alpha: np.ndarray
    centre: tuple[float, float]
    width: float
    height: float
    top: float
    foreground_fraction: float


def _kmeans(colours: np.ndarray, k: int, steps: int = 8) -> np.ndarray:
    """Deterministic k-means (init: luminance quantiles) of (M, 3) float colours -> (k', 3) centres."""
    order = np.argsort(colours.sum(1), kind="stable")
    centres = colours[order[np.linspace(0, len(order) - 1, k).round().astype(int)]].copy()
    for _ in range(steps):
        label = ((colours[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(len(centres)):
            members = colours[label == c]
            if len(members):
                centres[c] = members.mean(0)
    return np.unique(centres.round(3), axis=0)


def _nearest_distance(image: np.ndarray, centres: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1, 3)
    best = np.full(len(flat), np.inf)
    for c in centres:
        np.minimum(best, np.sqrt(((flat - c) ** 2).sum(1)), out=best)
    return best.reshape(image.shape[:2])


def background_matte(rgb: np.ndarray, path: str | Path = "<photo>") -> tuple[np.ndarray, np.ndarray]:
    """(full-resolution alpha (H, W) float32 {0, 1}, analysis-resolution mask (h, w) bool) of one photo.

    Raises :class:`CreateError` naming ``path`` when no person stands out from the border colours.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, ANALYSIS_SIDE / max(height, width))
    small_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(small_size, Image.Resampling.BILINEAR), dtype=np.float64)
    h, w = small.shape[:2]
    b = max(2, round(BORDER_FRACTION * min(h, w)))
    side = max(b + 1, round(SIDE_BORDER_FRACTION * h))

    def strips(a: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                a[:b].reshape(-1, *a.shape[2:]),
                a[b:side, :b].reshape(-1, *a.shape[2:]),
                a[b:side, -b:].reshape(-1, *a.shape[2:]),
            ]
        )

    centres = _kmeans(strips(small), CLUSTERS)
    distance = _nearest_distance(small, centres)
    border_distance = strips(distance)
    threshold = max(MIN_CONTRAST, 2.0 * float(np.percentile(border_distance, 99)))
    mask = distance > threshold
    structure = np.ones((3, 3), dtype=bool)
    mask = ndimage.binary_closing(ndimage.binary_opening(mask, structure), structure)
    labels, count = ndimage.label(mask)
    if count == 0:
        raise CreateError(
            f"photo {path}: no detectable head (nothing stands out from the background colours)"
        )
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    best = int(np.argmax(areas)) + 1
    fraction = float(areas[best - 1]) / (h * w)
    if fraction < MIN_AREA_FRACTION:
        raise CreateError(
            f"photo {path}: no detectable head (the largest foreground region covers {100 * fraction:.2f}% "
            f"of the photo, less than {100 * MIN_AREA_FRACTION:g}%)"
        )
    mask = ndimage.binary_fill_holes(labels == best)
    fraction = float(mask.mean())
    if fraction > MAX_AREA_FRACTION:
        raise CreateError(
            f"photo {path}: no detectable head (the foreground covers {100 * fraction:.0f}% of the photo: no "
            "background is visible around the person; step back or use a plain background)"
        )
    full = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BILINEAR)
    alpha = (np.asarray(full) >= 128).astype(np.float32)
    return alpha, mask


def detect_head(rgb: np.ndarray, path: str | Path = "<photo>") -> HeadDetection:
    """Matte the photo and find the head on the silhouette (module docstring); CreateError naming ``path``."""
    alpha, mask = background_matte(rgb, path)
    height, width = rgb.shape[:2]
    h, w = mask.shape
    sx, sy = width / w, height / h  # analysis px -> photo px
    rows = np.flatnonzero(mask.any(1))
    top = int(rows[0])
    spans = np.zeros(h)
    mids = np.zeros(h)
    for y in rows:
        cols = np.flatnonzero(mask[y])
        spans[y] = cols[-1] - cols[0] + 1
        mids[y] = 0.5 * (cols[0] + cols[-1] + 1)
    band = h - top
    for extent in range(2, h - top + 1):
        if extent >= HEAD_ASPECT * float(np.percentile(spans[top : top + extent], 95)):
            band = extent
            break
    head_width = float(np.percentile(spans[top : top + band], 95))
    if head_width < max(4.0, MIN_HEAD_FRACTION * min(h, w)):
        raise CreateError(
            f"photo {path}: no detectable head (the top of the silhouette is {head_width * sx:.0f} px wide, "
            f"less than {100 * MIN_HEAD_FRACTION:g}% of the photo)"
        )
    in_band = np.arange(top, top + band)
    in_band = in_band[spans[in_band] > 0]
    centre_x = float(np.median(mids[in_band]))
    return HeadDetection(
        alpha=alpha,
        centre=(centre_x * sx, (top + 0.5 * band) * sy),
        width=head_width * sx,
        height=band * sy,
        top=top * sy,
        foreground_fraction=float(mask.mean()),
    )

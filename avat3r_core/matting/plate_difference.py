"""Classical matting against a clean background plate: the backend that needs no network weights.

Ava-256 ships a clean plate per camera (the empty dome seen through the same lens), so the foreground is
"whatever differs from the plate". The pipeline, per image:

1. Colour difference in BT.601 YCbCr of the sRGB values (sRGB is already roughly perceptual; the opponent
   split lets luma and chroma be weighted separately), with a per-channel gain fitted on pixels that look
   like background, so a global exposure / white-balance drift between the plate and the frame (the plate
   is shot at another time) does not read as foreground. The difference vector is box-filtered (3x3) before
   its norm: sensor noise and AVIF ringing are independent per pixel and shrink by ~3x, the subject's edge
   moves by at most a pixel, which the soft edge absorbs anyway.
2. Robust thresholds: the background noise level is the median difference over a border strip of the
   image (the border is mostly background; the median tolerates the subject touching up to half of it),
   and the hysteresis thresholds are multiples of it with floors, so clean synthetic frames and noisy real
   ones both get a threshold just above their own noise.
3. Hysteresis + components: connected regions above the low threshold survive only if they contain enough
   pixels above the high threshold (kills noise specks and compression ringing), and only the largest
   region plus regions at least `min_component_fraction` of its size are kept (the head, and shoulders if a
   hair line splits them). Low-contrast parts touching the head (dark hair against a dark beam) grow in via
   the low threshold.
4. A small closing bridges pixel-wide gaps and every background region that does not touch the image border
   is filled: foreground pixels whose colour happens to equal the plate (the failure mode of the method)
   are almost always enclosed by the head.
5. Soft edges: in a band of `edge_band` px around the detected edge, alpha is re-estimated by solving the
   compositing equation I = a F + (1 - a) B for a (least squares along F - B), with B the plate and F the
   local mean colour of the certain foreground; chroma is down-weighted there because AVIF/JPEG store it at
   half resolution and it bleeds a pixel past the true edge (with full chroma the mask grew by ~1 px all
   round: IoU 0.967 -> 0.992 at 256x167 with the projection). Where F and B are too similar for that, a
   Gaussian blur of the binary mask (0.5 level = the binary edge) takes over. Away from the band alpha is
   exactly 0 or 1.

All morphology is border-aware: the subject routinely leaves the frame at the bottom (neck, shoulders), so
erosions treat outside-the-image as foreground (border_value=1) and do not eat the subject at the border.

Speed: steps 1-4 are whole-image filters (~90 ms at the 4TB release's 1024x667 with scipy). Images at least
twice `work_height` (256) tall run them on factor x factor block means instead (the size the defaults were
tuned at), and only the cells along the coarse edge go back to full resolution, where step 5's projection
decides the edge pixel by pixel (`_matte_reduced`): ~8-11 ms per 1024x667 image, IoU 0.993 against the true
alpha on the synthetic capture (0.998 with every step at full resolution, `work_height: 0`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from PIL import Image
from scipy import ndimage

from avat3r_core.matting.composite import alpha_to_uint8

# BT.601 full-range RGB -> YCbCr (without the +128 offset: only differences are used).
_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float32,
)
_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE = ndimage.generate_binary_structure(2, 2)


@dataclass(frozen=True)
class PlateDifferenceParams:
    """Knobs of `plate_difference_matte`; the defaults are tuned on the synthetic capture at every size.

    Thresholds are in 8-bit levels of the (box-filtered) colour distance; `noise` below means the median
    distance over the border strip, i.e. the typical background difference of this very image.
    """

    luma_weight: float = 1.0
    """Weight of the luma difference against the chroma difference (lower it where shadows or flicker
    change brightness but not colour)."""
    chroma_weight: float = 1.5
    """Weight of the Cb/Cr differences; chroma is insensitive to shading and exposure, so it counts more."""
    smooth: int = 3
    """Box filter size applied to the difference vector before its norm (1 disables)."""
    compensate_gain: bool = True
    """Fit a per-channel gain plate -> image on background-looking pixels (exposure/white-balance drift)."""
    max_gain_change: float = 0.25
    """The fitted gain is clipped to 1 +- this; a larger change means the plate does not belong here."""
    border_fraction: float = 0.04
    """Width of the border strip used to estimate the noise level, as a fraction of min(H, W)."""
    high_factor: float = 6.0
    """Seed threshold = max(high_floor, high_factor * noise)."""
    high_floor: float = 14.0
    """Minimum seed threshold in levels (a clean frame has almost no noise; AVIF edges still ring)."""
    low_factor: float = 3.0
    """Grow threshold = max(low_floor, low_factor * noise); regions above it join if they touch a seed."""
    low_floor: float = 6.0
    """Minimum grow threshold in levels."""
    min_seed_fraction: float = 2e-4
    """A region needs at least this fraction of the image's pixels above the seed threshold (>= 4 px)."""
    min_component_fraction: float = 0.05
    """Keep the largest region and every region at least this fraction of its area; drop the rest."""
    close_radius: int = 1
    """Radius (px, at 256 px image height; scaled with the image) of the closing that bridges thin gaps."""
    fill_holes: bool = True
    """Fill background regions that do not touch the image border (plate-coloured pixels inside the head)."""
    edge_sigma: float = 1.0
    """Gaussian sigma (px, not scaled: edge uncertainty is a pixel or two at any size) of the soft edge;
    0 gives a binary matte."""
    edge_band: int = 2
    """Half-width (px) of the band around the detected edge where alpha is re-estimated by colour
    projection; 0 keeps the Gaussian-softened binary mask."""
    edge_chroma_weight: float = 0.3
    """Weight of chroma against luma in the edge projection (chroma is half-resolution in AVIF/JPEG)."""
    edge_min_contrast: float = 12.0
    """Foreground/plate contrast (levels) below which the projection is not trusted; full trust at 2x."""
    black_level: int = 8
    """An image whose pixels are all <= this is a black (dropped) frame: the result is all zeros."""
    work_height: int = 256
    """Steps 1-4 run on a box-averaged copy about this many pixels tall (a factor H // work_height, when it is
    2 or more), where the defaults were tuned; only the cells along the detected edge are then re-decided and
    soft-edged at full resolution (`_matte_reduced`; where the foreground/plate contrast is too low for the
    projection, the soft edge is the bilinearly upsampled coarse mask there, whatever `edge_sigma`). 0 runs
    every step at full resolution: ~10x slower at the 4TB release's 1024 px, the reference the tests compare
    with."""

    def __post_init__(self) -> None:
        checks = {
            "luma_weight": self.luma_weight >= 0,
            "chroma_weight": self.chroma_weight >= 0 and self.luma_weight + self.chroma_weight > 0,
            "smooth": int(self.smooth) == self.smooth and self.smooth >= 1,
            "compensate_gain": isinstance(self.compensate_gain, bool),
            "max_gain_change": 0.0 <= self.max_gain_change < 1.0,
            "border_fraction": 0.0 < self.border_fraction <= 0.25,
            "high_factor": self.high_factor >= self.low_factor,
            "high_floor": self.high_floor >= self.low_floor,
            "low_factor": self.low_factor > 0,
            "low_floor": self.low_floor >= 0,
            "min_seed_fraction": 0.0 <= self.min_seed_fraction < 1.0,
            "min_component_fraction": 0.0 <= self.min_component_fraction <= 1.0,
            "close_radius": int(self.close_radius) == self.close_radius and self.close_radius >= 0,
            "fill_holes": isinstance(self.fill_holes, bool),
            "edge_sigma": self.edge_sigma >= 0,
            "edge_band": int(self.edge_band) == self.edge_band and self.edge_band >= 0,
            "edge_chroma_weight": self.edge_chroma_weight >= 0,
            "edge_min_contrast": self.edge_min_contrast > 0,
            "black_level": 0 <= self.black_level < 255,
            "work_height": int(self.work_height) == self.work_height and self.work_height >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"bad plate_difference option(s): {values} (see PlateDifferenceParams)")

    @classmethod
    def from_options(cls, options: dict) -> PlateDifferenceParams:
        """Build from a config mapping; an unknown key is a ValueError that names it (typos must not pass)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"unknown plate_difference option(s) {unknown}; known: {known}")
        try:
            return cls(**options)
        except TypeError as error:  # a value of the wrong type, e.g. a string where a number belongs
            raise ValueError(f"bad plate_difference option value: {error}") from None


def _check_pair(image: np.ndarray, plate: np.ndarray) -> None:
    for name, array in (("image", image), ("plate", plate)):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array, got {getattr(array, 'dtype', type(array))}")
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (H, W, 3), got {array.shape}")
    if image.shape != plate.shape:
        raise ValueError(f"image {image.shape} and plate {plate.shape} differ in shape")


def _border_mask(height: int, width: int, fraction: float) -> np.ndarray:
    """Pixels within `fraction * min(H, W)` (at least 2 px) of the image border."""
    b = max(2, round(fraction * min(height, width)))
    mask = np.zeros((height, width), dtype=bool)
    mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = True, True, True, True
    return mask


def _distance(
    image: np.ndarray, plate: np.ndarray, gain: np.ndarray, params: PlateDifferenceParams
) -> np.ndarray:
    """Weighted YCbCr distance between image and gain * plate, box-filtered, in 8-bit levels (H, W)."""
    weights = np.array([params.luma_weight, params.chroma_weight, params.chroma_weight], np.float32)
    matrix = (_YCBCR * weights[:, None]).T
    # image @ M - plate @ (gain * M): the gain folds into the matrix, no scaled copy of the plate.
    ycc = image.astype(np.float32) @ matrix
    ycc -= plate.astype(np.float32) @ (matrix * gain.astype(np.float32)[:, None])
    if params.smooth > 1:
        ycc = ndimage.uniform_filter(ycc, size=(params.smooth, params.smooth, 1), mode="nearest")
    return np.sqrt(np.einsum("hwc,hwc->hw", ycc, ycc))


def _fit_gain(image: np.ndarray, plate: np.ndarray, background: np.ndarray, limit: float) -> np.ndarray:
    """Per-channel median ratio image / plate over background pixels bright enough for a stable ratio."""
    img = image.reshape(-1, 3).astype(np.float32)
    pl = plate.reshape(-1, 3).astype(np.float32)
    bg = background.reshape(-1)
    gain = np.ones(3, np.float32)
    for c in range(3):
        use = bg & (pl[:, c] >= 24.0)
        if np.count_nonzero(use) >= 64:
            gain[c] = np.median(img[use, c] / pl[use, c])
    return np.clip(gain, 1.0 - limit, 1.0 + limit)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, _CROSS, iterations=radius) if radius > 0 else mask


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closing whose erosion treats outside the image as foreground, so edges touching the border stay."""
    if radius <= 0:
        return mask
    grown = ndimage.binary_dilation(mask, _CROSS, iterations=radius)
    return ndimage.binary_erosion(grown, _CROSS, iterations=radius, border_value=1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set every background region that does not touch the image border (one labelling, no iteration)."""
    labels, n = ndimage.label(~mask, _CROSS)
    if n == 0:
        return mask
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        outside[edge] = True
    outside[0] = True  # label 0 is the foreground itself
    return mask | ~outside[labels]


def _select_components(low: np.ndarray, high: np.ndarray, params: PlateDifferenceParams) -> np.ndarray:
    """Hysteresis + component selection with a single labelling of the low-threshold mask."""
    labels, n = ndimage.label(low, _SQUARE)
    if n == 0:
        return np.zeros_like(low)
    seeds = np.bincount(labels[high], minlength=n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)
    seeds[0] = area[0] = 0
    min_seeds = max(4, params.min_seed_fraction * low.size)
    ok = seeds >= min_seeds
    if not ok.any():
        return np.zeros_like(low)
    largest = area[ok].max()
    keep = ok & (area >= params.min_component_fraction * largest)
    return keep[labels]


def _detect(
    image: np.ndarray, plate: np.ndarray, params: PlateDifferenceParams, gain_samples: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-4: the binary foreground (H, W) and the fitted plate gain (3,); empty for a black frame.

    The gain is fitted on a strided subset of about `gain_samples` pixels (at least every pixel)."""
    height, width = image.shape[:2]
    ones = np.ones(3, np.float32)
    if int(image.max(initial=0)) <= params.black_level:
        return np.zeros((height, width), dtype=bool), ones
    gain = ones
    if params.compensate_gain and params.max_gain_change > 0:
        # A first pass on a strided subset (~gain_samples pixels) finds background-looking pixels: clearly
        # below a generous threshold; the median ratio over them ignores the foreground that leaks in.
        step = max(1, int(np.sqrt(height * width / gain_samples)))
        small_img, small_plate = image[::step, ::step], plate[::step, ::step]
        small = _distance(small_img, small_plate, ones, params)
        small_border = _border_mask(*small.shape, params.border_fraction)
        loose = max(2.0 * params.high_floor, 2.0 * params.high_factor * float(np.median(small[small_border])))
        gain = _fit_gain(small_img, small_plate, small < loose, params.max_gain_change)
    dist = _distance(image, plate, gain, params)
    noise = float(np.median(dist[_border_mask(height, width, params.border_fraction)]))
    high = max(params.high_floor, params.high_factor * noise)
    low = max(params.low_floor, params.low_factor * noise)
    mask = _select_components(dist > low, dist > high, params)
    if not mask.any():
        return mask, gain
    mask = _close(mask, round(params.close_radius * height / 256.0))
    if params.fill_holes:
        mask = _fill_holes(mask)
    return mask, gain


def _bin2(array: np.ndarray) -> np.ndarray:
    """2x2 block sums of an even-sized array (strided adds: far faster than reshape + mean in numpy)."""
    return array[0::2, 0::2] + array[1::2, 0::2] + array[0::2, 1::2] + array[1::2, 1::2]


def _local_foreground_colour(
    image: np.ndarray, inner: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the certain foreground `inner` around each (row, col), and whether there is any.

    A normalised box filter (sum of colour * mask / sum of mask) over a window that reaches from the
    outer edge of the band to beyond its inner edge. It runs on a 2x2-binned copy: the window is a dozen
    pixels wide, so binning changes the mean very little and quarters the cost at release resolution.
    """
    h, w = inner.shape
    h2, w2 = h - h % 2, w - w % 2
    if min(h2, w2) < 8:  # too small to bin: work at full resolution
        weight = inner.astype(np.float32)
        colour = image.astype(np.float32) * weight[..., None]
        size, r_idx, c_idx = 4 * radius + 3, rows, cols
    else:
        weight = _bin2(inner[:h2, :w2].astype(np.float32))
        colour = _bin2(image[:h2, :w2].astype(np.float32) * inner[:h2, :w2, None])
        size = 2 * radius + 3
        r_idx, c_idx = np.minimum(rows // 2, h2 // 2 - 1), np.minimum(cols // 2, w2 // 2 - 1)
    weight = ndimage.uniform_filter(weight, size=size, mode="nearest")[r_idx, c_idx]
    colour = ndimage.uniform_filter(colour, size=(size, size, 1), mode="nearest")[r_idx, c_idx]
    has_fg = weight > 1e-3
    return colour / np.maximum(weight, 1e-3)[:, None], has_fg


def _refine_edges(
    image: np.ndarray, plate: np.ndarray, gain: np.ndarray, mask: np.ndarray, params: PlateDifferenceParams
) -> np.ndarray:
    """Step 5: alpha from the mask, re-estimated by colour projection in a band around its boundary.

    In the band, alpha = <I - B, F - B> / |F - B|^2 (the compositing equation I = a F + (1 - a) B solved
    in least squares), with B the plate and F the mean colour of the certain foreground nearby (normalised
    box filter). Chroma counts `edge_chroma_weight` times luma there: AVIF stores chroma at half resolution,
    so chroma bleeds a pixel past the true edge, while luma is sharp. Where F and B are too close for the
    projection to be stable (or no certain foreground is near), the Gaussian-softened mask is used instead,
    blended by the contrast |F - B|.
    """
    soft = soften(mask, params.edge_sigma)
    radius = params.edge_band
    if radius <= 0:
        return soft
    inner = ndimage.binary_erosion(mask, _SQUARE, iterations=radius, border_value=1)
    band = _dilate(mask, radius) & ~inner
    if not band.any():
        return soft
    rows, cols = np.nonzero(band)
    fg, has_fg = _local_foreground_colour(image, inner, rows, cols, radius)
    bg = plate[rows, cols].astype(np.float32) * gain
    metric = np.array([1.0, params.edge_chroma_weight, params.edge_chroma_weight], np.float32)
    d = (image[rows, cols].astype(np.float32) - bg) @ _YCBCR.T
    f = (fg - bg) @ _YCBCR.T
    f_norm2 = np.einsum("nc,c,nc->n", f, metric, f)
    proj = np.einsum("nc,c,nc->n", d, metric, f) / np.maximum(f_norm2, 1e-6)
    contrast = np.sqrt(f_norm2)
    lo, hi = params.edge_min_contrast, 2.0 * params.edge_min_contrast
    confidence = np.where(has_fg, np.clip((contrast - lo) / max(hi - lo, 1e-6), 0.0, 1.0), 0.0)
    alpha = soft
    alpha[rows, cols] = confidence * np.clip(proj, 0.0, 1.0) + (1.0 - confidence) * soft[rows, cols]
    return alpha


def foreground_mask(image: np.ndarray, plate: np.ndarray, params: PlateDifferenceParams) -> np.ndarray:
    """The binary foreground (H, W) bool before edge refinement; all False for a black or empty frame."""
    _check_pair(image, plate)
    return _detect(image, plate, params)[0]


def soften(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Binary mask -> float32 alpha, a Gaussian ramp of `sigma` px across the edge, exact 0/1 elsewhere."""
    if sigma <= 0 or not mask.any():
        return mask.astype(np.float32)
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), sigma, mode="nearest", truncate=3.0)
    # Snap the far tails (Gaussian tails reach ~1e-3 at 3 sigma) so interior/exterior are exactly 1/0.
    alpha[alpha > 0.995] = 1.0
    alpha[alpha < 0.005] = 0.0
    return alpha


def _reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks (a partial block at the right or bottom edge averages what it has)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))


def _bilinear(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, factor: int) -> np.ndarray:
    """The coarse `grid` (h, w) sampled bilinearly at full-resolution pixel rows (n, f, 1) and cols (n, 1, f):
    cell (i, j) covers pixels [i f, (i + 1) f) x [j f, (j + 1) f), its value sits at the cell's centre."""
    h, w = grid.shape

    def weights(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = (index + 0.5) / factor - 0.5
        low = np.floor(position)
        frac = (position - low).astype(np.float32)
        low = low.astype(np.intp)
        return np.clip(low, 0, size - 1), np.clip(low + 1, 0, size - 1), frac

    r0, r1, fr = weights(rows, h)
    c0, c1, fc = weights(cols, w)
    top = grid[r0, c0] * (1 - fc) + grid[r0, c1] * fc
    bottom = grid[r1, c0] * (1 - fc) + grid[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _erode_square(patches: np.ndarray, radius: int) -> np.ndarray:
    """Erosion by a (2 radius + 1)^2 square of `patches` (n, h, w), separable; the result is 2 radius smaller
    on each axis (only the pixels whose whole window is inside the patch)."""
    h, w = patches.shape[1:]
    rows = patches[:, : h - 2 * radius].copy()
    for d in range(1, 2 * radius + 1):
        rows &= patches[:, d : h - 2 * radius + d]
    out = rows[:, :, : w - 2 * radius].copy()
    for d in range(1, 2 * radius + 1):
        out &= rows[:, :, d : w - 2 * radius + d]
    return out


def _dilate_cross(patches: np.ndarray, radius: int) -> np.ndarray:
    """Dilation of `patches` (n, h, w) by the 3x3 cross `radius` times (a diamond), 2 radius smaller."""
    for _ in range(radius):
        centre = patches[:, 1:-1, 1:-1]
        patches = (
            centre
            | patches[:, :-2, 1:-1]
            | patches[:, 2:, 1:-1]
            | patches[:, 1:-1, :-2]
            | patches[:, 1:-1, 2:]
        )
    return patches


def _box_sums(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int) -> np.ndarray:
    """Sums of `values` (c, h, w) over the (2 radius + 1)^2 windows centred on (rows, cols), clipped to the
    grid (zero padding), gathered for those cells only (a few per cent of the grid): (n, c)."""
    padded = np.pad(values, ((0, 0), (radius, radius), (radius, radius)))
    size = 2 * radius + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    return windows[:, rows, cols].sum(axis=(2, 3)).T


def _matte_reduced(
    image: np.ndarray,
    plate: np.ndarray,
    params: PlateDifferenceParams,
    factor: int,
    small_plate: np.ndarray | None = None,
) -> np.ndarray:
    """`plate_difference_matte` with steps 1-4 on factor x factor block means (the image and the plate, so the
    whole detection costs what it does at ~256 px), and full-resolution work only near the edge:

    - the cells within one cell of the coarse mask's edge are the only ones whose pixels can be either side of
      the true edge; there, alpha is re-estimated per pixel by the colour projection of step 5 (F the local
      mean colour of the certain foreground, from the coarse grid; low contrast falls back on the bilinearly
      upsampled coarse mask), and the full-resolution binary mask is alpha >= 0.5;
    - as in step 5, the projected alpha is kept in a band of `edge_band` px around that binary edge, and
      everything else is exactly 0 or 1 (the coarse mask away from the edge).

    Returns the uint8 alpha (what the stores hold: `alpha_to_uint8` of the float alpha, computed only where
    it is fractional). `small_plate` is `_reduce(plate, factor)` when the caller has it (one per camera).
    """
    height, width = image.shape[:2]
    small = _reduce(image, factor)
    if small_plate is None:
        small_plate = _reduce(plate, factor)
    mask, gain = _detect(small, small_plate, params, gain_samples=10000)
    if not mask.any():
        return np.zeros((height, width), dtype=np.uint8)
    inner = ndimage.binary_erosion(mask, _SQUARE, border_value=1)
    near = ndimage.binary_dilation(mask, _SQUARE) & ~inner
    ys, xs = np.nonzero(near)
    # Local foreground colour per edge cell: mean colour of the certain (eroded) coarse foreground in a 5x5
    # window of cells (it reaches two cells past the edge cell, into the certain foreground).
    layers = np.empty((4, *mask.shape), dtype=np.float32)
    layers[:3] = np.moveaxis(small, -1, 0)
    layers[:3] *= inner
    layers[3] = inner
    sums = _box_sums(layers, ys, xs, 2)
    has_fg = sums[:, 3] > 0.5
    fg = (sums[:, :3] / np.maximum(sums[:, 3:], 1.0)).astype(np.float32)

    steps = np.arange(factor)
    rows = np.minimum(ys[:, None] * factor + steps, height - 1)[:, :, None]  # (n, f, 1)
    cols = np.minimum(xs[:, None] * factor + steps, width - 1)[:, None, :]  # (n, 1, f)
    flat = rows * width + cols
    bg = np.take(plate.reshape(-1, 3), flat, axis=0).astype(np.float32)
    bg *= gain
    diff = np.take(image.reshape(-1, 3), flat, axis=0).astype(np.float32)
    diff -= bg
    towards = fg[:, None, None, :] - bg
    # The metric of step 5 (YCbCr, chroma down-weighted) as one 3x3 form in RGB.
    metric = np.array([1.0, params.edge_chroma_weight, params.edge_chroma_weight], np.float32)
    weighted = towards @ (_YCBCR.T @ (metric[:, None] * _YCBCR))
    f_norm2 = np.einsum("nijc,nijc->nij", weighted, towards)
    proj = np.einsum("nijc,nijc->nij", weighted, diff) / np.maximum(f_norm2, 1e-6)
    lo, hi = params.edge_min_contrast, 2.0 * params.edge_min_contrast
    confidence = np.clip((np.sqrt(f_norm2) - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * has_fg[:, None, None]
    fallback = _bilinear(mask.astype(np.float32), rows, cols, factor)
    alpha_near = confidence * np.clip(proj, 0.0, 1.0) + (1.0 - confidence) * fallback

    full = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)[:height, :width]
    full[rows, cols] = alpha_near >= 0.5
    radius = params.edge_band
    if radius > 0:
        # Band of step 5 around the full-resolution edge: dilation (cross) minus erosion (square) of the
        # binary mask, on patches of the edge cells with a halo (outside the image counts as foreground for
        # the erosion: the clipped index repeats the border pixel, alike where the mask touches the border).
        halo_steps = np.arange(-radius, factor + radius)
        prow = np.clip(ys[:, None] * factor + halo_steps, 0, height - 1)[:, :, None]
        pcol = np.clip(xs[:, None] * factor + halo_steps, 0, width - 1)[:, None, :]
        patches = full[prow, pcol]
        band = _dilate_cross(patches, radius) & ~_erode_square(patches, radius)
        alpha_near = np.where(band, alpha_near, full[rows, cols])
    else:
        alpha_near = alpha_near >= 0.5
    alpha = full.view(np.uint8) * np.uint8(255)
    alpha[rows, cols] = alpha_to_uint8(alpha_near.astype(np.float32, copy=False))
    return alpha


def reduction_factor(height: int, params: PlateDifferenceParams) -> int:
    """The block size steps 1-4 run at for images `height` px tall (1: full resolution)."""
    return max(1, height // params.work_height) if params.work_height > 0 else 1


def plate_difference_alpha(
    image: np.ndarray,
    plate: np.ndarray,
    params: PlateDifferenceParams | None = None,
    *,
    small_plate: np.ndarray | None = None,
) -> np.ndarray:
    """The stored alpha: uint8 (H, W), ``alpha_to_uint8(plate_difference_matte(image, plate, params))``.

    Images at least twice `params.work_height` tall are detected on block means (`_matte_reduced`, ~10 ms
    instead of ~90 ms at 1024 x 667), which gives uint8 directly. `small_plate`: the plate reduced by
    `reduction_factor` (`reduce_plate`), to reduce it once per camera instead of once per image.
    """
    params = params or PlateDifferenceParams()
    _check_pair(image, plate)
    factor = reduction_factor(image.shape[0], params)
    if factor >= 2:
        return _matte_reduced(image, plate, params, factor, small_plate)
    return alpha_to_uint8(_matte_full(image, plate, params))


def reduce_plate(plate: np.ndarray, params: PlateDifferenceParams) -> np.ndarray | None:
    """The `small_plate` argument of `plate_difference_alpha` for images the plate's size (None: not used)."""
    factor = reduction_factor(plate.shape[0], params)
    return _reduce(plate, factor) if factor >= 2 else None


def _matte_full(image: np.ndarray, plate: np.ndarray, params: PlateDifferenceParams) -> np.ndarray:
    mask, gain = _detect(image, plate, params)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    return _refine_edges(image, plate, gain, mask, params)


def plate_difference_matte(
    image: np.ndarray, plate: np.ndarray, params: PlateDifferenceParams | None = None
) -> np.ndarray:
    """Alpha (H, W) float32 in [0, 1] of `image` against its camera's clean `plate` (both uint8 HxWx3 RGB).

    A black frame (every value <= params.black_level) or a frame identical to the plate up to noise gives
    all zeros, without error: whether an empty matte is a skip or a failure is the stage's decision.
    Images at least twice `params.work_height` tall are detected on block means (`_matte_reduced`), whose
    alpha is computed in uint8: it comes back as multiples of 1/255.
    """
    params = params or PlateDifferenceParams()
    _check_pair(image, plate)
    factor = reduction_factor(image.shape[0], params)
    if factor >= 2:
        return _matte_reduced(image, plate, params, factor).astype(np.float32) / np.float32(255.0)
    return _matte_full(image, plate, params)

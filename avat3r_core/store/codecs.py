"""JPEG and AVIF as Zarr v3 array->bytes codecs, and the codec pipelines the stores use.

Why a codec and not AVIF files: supervision crops at Ava-256 scale are ~0.5 TB per subject as raw uint8, and
the release itself ships AVIF, so lossy AVIF at high quality costs the training set little. Keeping it inside
Zarr (one chunk = one image, chunks packed into shards) keeps the "few files" rule of the store layer and lets
every reader use ordinary Zarr indexing. The codecs are registered under the namespaced names ``avat3r.jpeg``
and ``avat3r.avif`` both at import time and through the ``zarr.codecs`` entry points of the package, so any
environment with the package installed can open the stores without importing this module first.

Determinism: the encoder runs with a fixed speed and ONE thread. libaom's output depends on its thread count
(measured: 190677 vs 190717 bytes for the same 667x667 image with 1 and 2 threads), so a store written on a
16-core node would otherwise differ from one written on a laptop. Zarr already decodes and encodes chunks in
parallel threads, so one thread per image costs little throughput. Bytes are identical for a given
libavif/libaom build; a different build may produce different (equally valid) bytes: the store manifest
checksums what was stored (manifest.py), so a store's checksum says "these bytes", not "these pixels".
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image
from zarr.abc.codec import ArrayBytesCodec, BytesBytesCodec
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

AVIF_CODEC_NAME = "avat3r.avif"
"""Name of the codec in zarr.json; namespaced so it can never clash with a future standard codec."""
JPEG_CODEC_NAME = "avat3r.jpeg"
LOSSY_IMAGE_CODECS = ("avif", "jpeg")
"""`create_images` codec names that store uint8 RGB lossily (one image file per chunk)."""

AVIF_SPEED = 9
"""libaom speed preset (0 slowest .. 10 fastest). Fixed, and part of the codec config, so it is recorded.
On 667x667 head crops at quality 90, speed 9 encodes and decodes 5.5x faster than speed 6 (33 vs 181 ms)
for 12% more bytes at the same PSNR (47.2 dB): encoding was the largest cost of the crop stage."""

ZSTD_LEVEL = 3
"""zstd level for the small lossless arrays (`write_array`): the zstd default; their cost does not matter."""

IMAGE_ZSTD_LEVEL = 1
"""zstd level for lossless image arrays (alphas, input crops, zstd supervision crops, positions). Measured on
the 667 px crops of benchmarks/preprocess.py: level 1 encodes a 667 px crop in 1.7 ms against 2.4 ms at
level 3 for 13% more bytes; negative levels are hardly faster (1.5 ms) and compress worse."""

SUBSAMPLINGS = ("4:2:0", "4:2:2", "4:4:4")


class ImageFileCodec(ArrayBytesCodec):
    """A uint8 RGB chunk of shape (1.., H, W, 3) as one image file through Pillow.

    A chunk holding several images (leading size > 1) is encoded as one tall image (n*H, W), so the codec is
    correct for any chunking, though the stores always use one image per chunk. Subclasses name the format
    and its encoder options.
    """

    is_fixed_size = False
    name: ClassVar[str]
    format: ClassVar[str]

    def _save_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _configuration(self) -> dict[str, JSON]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, cls.name, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": self.name, "configuration": self._configuration()}

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid
    ) -> None:
        native = dtype.to_native_dtype()
        if native != np.dtype("uint8"):
            raise ValueError(f"{self.name} encodes uint8 RGB only, got dtype {native}")
        if len(shape) < 3 or shape[-1] != 3:
            raise ValueError(f"{self.name} needs shape (..., H, W, 3), got {shape}")

    def encode_pixels(self, pixels: np.ndarray) -> bytes:
        """Image bytes of uint8 RGB pixels of shape (..., H, W, 3); several images are stacked vertically."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-1] != 3:
            raise ValueError(f"{self.name}: need uint8 (..., H, W, 3), got {pixels.dtype} {pixels.shape}")
        tall = np.ascontiguousarray(pixels.reshape(-1, pixels.shape[-2], 3))
        out = io.BytesIO()
        Image.fromarray(tall, "RGB").save(out, format=self.format, **self._save_options())
        return out.getvalue()

    def decode_pixels(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Pixels of `shape` (..., H, W, 3) from image bytes; ValueError if corrupt or of another size."""
        try:
            with Image.open(io.BytesIO(data), formats=[self.format]) as image:
                pixels = np.asarray(image.convert("RGB"))
        except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... on corrupt data
            raise ValueError(f"{self.name}: corrupt {self.format} chunk: {exc}") from exc
        if pixels.size != int(np.prod(shape, dtype=np.int64)) or pixels.shape[-2] != shape[-2]:
            raise ValueError(f"{self.name}: decoded image {pixels.shape} does not fill chunk {shape}")
        return pixels.reshape(shape)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return chunk_spec.prototype.buffer.from_bytes(self.encode_pixels(chunk_array.as_numpy_array()))

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        pixels = self.decode_pixels(chunk_bytes.to_bytes(), tuple(chunk_spec.shape))
        return chunk_spec.prototype.nd_buffer.from_numpy_array(pixels)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable-size output


def _check_quality(label: str, quality: Any, low: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= 100:
        raise ValueError(f"{label} quality must be an integer in {low}..100, got {quality!r}")


def _check_subsampling(label: str, subsampling: Any) -> None:
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"{label} subsampling must be one of {SUBSAMPLINGS}, got {subsampling!r}")


@dataclass(frozen=True)
class AvifCodec(ImageFileCodec):
    """AVIF (libavif + libaom in Pillow's wheels), one thread, fixed speed (module docstring)."""

    name: ClassVar[str] = AVIF_CODEC_NAME
    format: ClassVar[str] = "AVIF"

    quality: int
    speed: int
    subsampling: str

    def __init__(self, *, quality: int = 90, speed: int = AVIF_SPEED, subsampling: str = "4:4:4") -> None:
        _check_quality("AVIF", quality, 0)
        if isinstance(speed, bool) or not isinstance(speed, int) or not 0 <= speed <= 10:
            raise ValueError(f"AVIF speed must be an integer in 0..10, got {speed!r}")
        _check_subsampling("AVIF", subsampling)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "speed", speed)
        object.__setattr__(self, "subsampling", subsampling)

    def _configuration(self) -> dict[str, JSON]:
        return {"quality": self.quality, "speed": self.speed, "subsampling": self.subsampling}

    def _save_options(self) -> dict[str, Any]:
        return {
            "quality": self.quality,
            "speed": self.speed,
            "subsampling": self.subsampling,
            # libaom output depends on the thread count; one thread keeps the bytes reproducible
            "max_threads": 1,
            "range": "full",
            "autotiling": False,
        }


@dataclass(frozen=True)
class JpegCodec(ImageFileCodec):
    """Baseline JPEG (libjpeg-turbo in Pillow's wheels): the supervision crops' default.

    Measured on 667 px head crops composited on black (README "Storage of supervision crops"): quality 95
    4:4:4 gives 47 dB on the head against AVIF q90's 46, in 1.8 ms instead of 17 ms per encode and 2.6
    instead of 4.9 ms per decode, for 1.8x the bytes. Chroma stays at full resolution by default: at the
    sharp head-on-black edge 4:2:0 bleeds colour into the background, which the model would learn. Output
    is deterministic (single-threaded libjpeg-turbo, no optimised Huffman tables, baseline).
    """

    name: ClassVar[str] = JPEG_CODEC_NAME
    format: ClassVar[str] = "JPEG"

    quality: int
    subsampling: str

    def __init__(self, *, quality: int = 95, subsampling: str = "4:4:4") -> None:
        _check_quality("JPEG", quality, 1)
        _check_subsampling("JPEG", subsampling)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "subsampling", subsampling)

    def _configuration(self) -> dict[str, JSON]:
        return {"quality": self.quality, "subsampling": self.subsampling}

    def _save_options(self) -> dict[str, Any]:
        return {
            "quality": self.quality,
            "subsampling": self.subsampling,
            "optimize": False,
            "progressive": False,
        }


register_codec(AVIF_CODEC_NAME, AvifCodec)
register_codec(JPEG_CODEC_NAME, JpegCodec)


def zstd_codecs(level: int = ZSTD_LEVEL) -> tuple[BytesCodec, BytesBytesCodec]:
    """Lossless pipeline: raw little-endian bytes, then zstd with its frame checksum.

    The checksum makes a flipped byte fail loudly at decompression instead of decoding to silent garbage.
    """
    return (BytesCodec(endian="little"), ZstdCodec(level=level, checksum=True))


def image_codecs(codec: str, quality: int = 90) -> tuple[Any, ...]:
    """The inner (per image) codec pipeline for a `create_images` codec name."""
    if codec == "zstd":
        return zstd_codecs(IMAGE_ZSTD_LEVEL)
    if codec == "avif":
        return (AvifCodec(quality=quality),)
    if codec == "jpeg":
        return (JpegCodec(quality=quality),)
    raise ValueError(f"unknown image codec {codec!r}; expected 'zstd' (lossless), 'jpeg' or 'avif' (lossy)")


def codec_names(codecs: Any) -> list[str]:
    """Names of a codec pipeline as they appear in zarr.json, sharding shown as ``sharding_indexed[...]``.

    Used by the manifest so a reader sees at a glance how an array is stored.
    """
    names = []
    for codec in codecs:
        spec = codec.to_dict()
        name = str(spec["name"])
        inner = getattr(codec, "codecs", None)
        if name == "sharding_indexed" and inner is not None:
            name = f"{name}[{','.join(codec_names(inner))}]"
        names.append(name)
    return names

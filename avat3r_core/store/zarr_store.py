"""The Zarr v3 store every stage writes through: one store per (stage, subject), written by one job.

Why this shape:
- Cluster file systems suffer from many small files, and an Ava-256 run has millions of images. Image arrays
  are chunked one image per chunk (so a reader decodes exactly the images it asks for) and the chunks are
  packed into shards by the sharding codec, one shard file per index of the first `shard_axes` leading axes
  (e.g. one per camera). A store is then a handful of files, not one per image.
- A store appears at its final path only when complete: it is written into a temporary sibling and renamed
  into place (`atomic_path`), with the manifest (shapes, dtypes, checksums) written last, before the rename.
  An exception leaves nothing at the final path and an existing store is replaced only on success.
- Provenance lives in the root attributes (stage, subject, config section, code version, random weights), so
  a store found on disk says what made it.
- Writes are deterministic: attributes are JSON with sorted keys, the codecs are configured for reproducible
  output, and nothing records a time or a host. Same data -> identical bytes on disk.

Writing images efficiently: zarr rewrites a whole shard file when part of it changes (it copies the other
images' encoded bytes; it does not re-encode them). Writing one full shard per assignment (``array[camera] =
images_of_that_camera``) is one write; writing image by image is correct but costs O(shard size) I/O per
image. For shards too large to hold in memory (Ava-256: thousands of timesteps per camera) pass
`images_per_shard` to split the next axis into blocks and write a block at a time.

An assignment that covers whole shards is encoded here, in the calling thread, into exactly the shard file
zarr would write (same inner codecs, chunks in zarr's morton order, empty chunks left out, the index and its
crc32c at the end; tests compare the bytes with zarr's own): zarr's generic path costs about as much again as
the zstd encode itself (a fill-value comparison of every chunk, copies, an event-loop round trip per chunk).
`read_block` is the matching fast read of whole shards. Anything else goes through zarr unchanged.

Checksums (see manifest.py): image arrays (sharded) are checksummed by their stored shard files at close,
which costs a read of the compressed bytes (a sixth to a tenth of the decoded bytes for the crops), not a hash
of every decoded byte; small arrays by their decoded bytes, hashed as they are written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import Zstd
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
from zarr.core.indexing import morton_order_iter
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import LocalStore

import avat3r_core
from avat3r_core.errors import Avat3rError

from .atomic import atomic_path
from .codecs import LOSSY_IMAGE_CODECS, ImageFileCodec, image_codecs, zstd_codecs

MANIFEST_NAME = "manifest.json"
"""Written inside the store, last, by `write_store`; its presence marks a complete store."""

PROVENANCE_ATTRS = ("stage", "subject", "config", "code_version")
"""Root attributes every store carries, fixed by `write_store`."""

CHUNK_KEY_ENCODING = {"name": "default", "separator": "."}
"""Shard files as ``c.0.3`` inside the array folder: no nested folder per index, fewer inodes."""


class StoreError(Avat3rError):
    """A store is missing, incomplete, not a store, or has unreadable or wrong content; names path/array."""

    def __init__(self, message: str, *, path: str | Path | None = None, array: str | None = None) -> None:
        self.path, self.array = path, array
        where = []
        if path is not None:
            where.append(f"store {path}")
        if array is not None:
            where.append(f"array '{array}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


def normalise_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """JSON round trip with sorted keys: numpy scalars, tuples and paths become plain JSON, and key order no
    longer depends on how the caller built the dict, so the same content always gives the same zarr.json.
    """
    try:
        return json.loads(json.dumps(attrs, sort_keys=True, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"attributes are not JSON serialisable: {exc}") from None


def _fill_value(dtype: np.dtype) -> Any:
    """0 of the dtype (False, '' for strings): unwritten chunks read back as zeros, never as garbage."""
    return np.zeros((), dtype=dtype)[()]


def canonical(block: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian copy (a view when already so), so checksums do not depend on the host."""
    dtype = block.dtype
    if dtype.byteorder not in ("|", "<") and not (dtype.byteorder == "=" and np.little_endian):
        dtype = dtype.newbyteorder("<")
    return np.ascontiguousarray(block, dtype=dtype)


def content_bytes(block: np.ndarray) -> np.ndarray:
    """The bytes the manifest checksum covers: `canonical` viewed as flat uint8 (no copy when canonical)."""
    return canonical(block).reshape(-1).view(np.uint8)


# -- whole-shard writes and reads ---------------------------------------------------------------------------
_MAX_UINT64 = np.uint64(2**64 - 1)
_INDEX_CODECS = [BytesCodec(endian="little").to_dict(), Crc32cCodec().to_dict()]


def _box(key: Any, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(start, extent, result shape) of a basic selection of integers and unit-step slices (one Ellipsis
    allowed), or None for anything else (fancy or boolean indexing, steps, out-of-range integers)."""
    key = key if isinstance(key, tuple) else (key,)
    ellipses = [i for i, k in enumerate(key) if k is Ellipsis]
    if len(ellipses) > 1:
        return None
    if ellipses:
        i = ellipses[0]
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        return None
    key = key + (slice(None),) * (len(shape) - len(key))
    starts, extent, result = [], [], []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            k = int(k) + n if int(k) < 0 else int(k)
            if not 0 <= k < n:
                return None
            starts.append(k)
            extent.append(1)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                return None
            starts.append(start)
            extent.append(max(stop - start, 0))
            result.append(max(stop - start, 0))
        else:
            return None
    return tuple(starts), tuple(extent), tuple(result)


def _as_block(value: Any, dtype: np.dtype, extent: tuple[int, ...], result: tuple[int, ...]) -> np.ndarray:
    """`value` as the C-contiguous content of a box of `extent`, cast and broadcast as an assignment would."""
    if np.ndim(value) == 0:
        return np.full(extent, np.array(value, dtype=dtype), dtype=dtype)
    value = np.asarray(value)
    if value.dtype == dtype and value.shape == result and value.flags.c_contiguous:
        return value.reshape(extent)
    block = np.empty(extent, dtype=dtype)
    block.reshape(result)[...] = value
    return block


@dataclass(frozen=True)
class _ShardLayout:
    """How one sharded array is stored, for the whole-shard fast path (see the module docstring)."""

    folder: Path
    shard: tuple[int, ...]
    chunk: tuple[int, ...]
    order: tuple[tuple[int, ...], ...]  # inner chunks in the order zarr writes them (morton order)
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[Any, tuple[int, ...]], np.ndarray]
    key: Callable[[tuple[int, ...]], str]

    @property
    def chunks_per_shard(self) -> tuple[int, ...]:
        return tuple(s // c for s, c in zip(self.shard, self.chunk, strict=True))

    def aligned(self, starts: tuple[int, ...], extent: tuple[int, ...], shape: tuple[int, ...]) -> bool:
        """Whether the box covers whole shards (a shard cut by the array's edge counts as whole)."""
        return all(
            s % size == 0 and ((s + e) % size == 0 or s + e == n) and e > 0
            for s, e, size, n in zip(starts, extent, self.shard, shape, strict=True)
        )

    def shards_of(self, starts: tuple[int, ...], extent: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        ranges = [
            range(s // size, -(-(s + e) // size))
            for s, e, size in zip(starts, extent, self.shard, strict=True)
        ]
        return itertools.product(*ranges)


def _zstd_encode(codec: Zstd, chunk: np.ndarray, dtype: np.dtype) -> bytes:
    """One chunk through the bytes + zstd pipeline (a module function, so benchmarks can time it)."""
    return codec.encode(np.ascontiguousarray(chunk, dtype=dtype))


def _shard_layout(array: zarr.Array) -> _ShardLayout | None:
    """The layout when `array` is a local sharded array this module can encode exactly like zarr: inner
    codecs bytes+zstd or avif, index at the end with bytes+crc32c, fill value zero, C order and empty chunks
    not written; None otherwise (zarr then does the work)."""
    metadata = array.metadata
    store = array.store
    if metadata.zarr_format != 3 or not isinstance(store, LocalStore) or len(metadata.codecs) != 1:
        return None
    sharding = metadata.codecs[0]
    if not isinstance(sharding, ShardingCodec) or sharding.index_location.value != "end":
        return None
    if [codec.to_dict() for codec in sharding.index_codecs] != _INDEX_CODECS:
        return None
    config = array.async_array.config
    dtype = np.dtype(array.dtype)
    if config.order != "C" or config.write_empty_chunks or dtype.kind not in "biuf":
        return None
    if np.asarray(array.fill_value, dtype=dtype).tobytes().strip(b"\0"):
        return None
    inner = sharding.codecs
    stored = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    if len(inner) == 2 and isinstance(inner[0], BytesCodec) and isinstance(inner[1], ZstdCodec):
        if dtype.itemsize > 1 and (inner[0].endian is None or inner[0].endian.value != "little"):
            return None
        zstd = Zstd(level=inner[1].level, checksum=inner[1].checksum)

        def encode(chunk: np.ndarray) -> bytes:
            return _zstd_encode(zstd, chunk, stored)

        def decode(data: Any, shape: tuple[int, ...]) -> np.ndarray:
            return np.frombuffer(zstd.decode(data), dtype=stored).reshape(shape)

    elif len(inner) == 1 and isinstance(inner[0], ImageFileCodec):
        image_codec = inner[0]
        encode = image_codec.encode_pixels

        def decode(data: Any, shape: tuple[int, ...]) -> np.ndarray:
            return image_codec.decode_pixels(bytes(data), shape)

    else:
        return None
    shard, chunk = tuple(array.shards), tuple(array.chunks)
    chunks_per_shard = tuple(s // c for s, c in zip(shard, chunk, strict=True))
    return _ShardLayout(
        folder=Path(store.root) / array.path,
        shard=shard,
        chunk=chunk,
        order=tuple(tuple(int(i) for i in c) for c in morton_order_iter(chunks_per_shard)),
        encode=encode,
        decode=decode,
        key=metadata.encode_chunk_key,
    )


def _write_shard(layout: _ShardLayout, coords: tuple[int, ...], part: np.ndarray) -> None:
    """Encode one shard from `part` (its region inside the array, origin at the shard's origin) exactly as
    zarr does, and write the file (or remove it when every chunk is empty, as zarr does)."""
    chunks_per_shard = layout.chunks_per_shard
    index = np.full((*chunks_per_shard, 2), _MAX_UINT64, dtype="<u8")
    pieces: list[bytes] = []
    offset = 0
    for local in layout.order:
        origin = [i * c for i, c in zip(local, layout.chunk, strict=True)]
        if any(o >= n for o, n in zip(origin, part.shape, strict=True)):
            continue  # entirely beyond the array's edge
        chunk = part[tuple(slice(o, o + c) for o, c in zip(origin, layout.chunk, strict=True))]
        if chunk.shape != layout.chunk:  # straddles the array's edge: zarr pads with the fill value
            padded = np.zeros(layout.chunk, dtype=part.dtype)
            padded[tuple(slice(0, n) for n in chunk.shape)] = chunk
            chunk = padded
        if not np.ascontiguousarray(chunk).reshape(-1).view(np.uint8).any():
            continue  # equal to the fill value, bit for bit (-0.0 is stored): not written
        data = layout.encode(chunk)
        index[local] = (offset, len(data))
        pieces.append(data)
        offset += len(data)
    path = layout.folder / layout.key(coords)
    if not pieces:
        path.unlink(missing_ok=True)
        return
    index_bytes = index.tobytes()
    pieces += [index_bytes, np.array([google_crc32c.value(index_bytes)], dtype="<u4").tobytes()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.writelines(pieces)


def _write_shards(
    layout: _ShardLayout, shape: tuple[int, ...], starts: tuple[int, ...], block: np.ndarray
) -> None:
    for coords in layout.shards_of(starts, block.shape):
        origin = [c * s for c, s in zip(coords, layout.shard, strict=True)]
        end = [min(o + s, n) for o, s, n in zip(origin, layout.shard, shape, strict=True)]
        region = tuple(slice(o - s, e - s) for o, e, s in zip(origin, end, starts, strict=True))
        _write_shard(layout, coords, block[region])


def read_block(array: zarr.Array, key: Any = ...) -> np.ndarray:
    """``array[key]``, decoded here, without zarr's per-chunk overhead, when `key` covers whole shards of a
    sharded image array (e.g. ``[camera, t0:t0 + images_per_shard]``); any other key is read by zarr.

    A damaged shard (index checksum, zstd frame checksum, undecodable AVIF) raises StoreError naming the
    array and the chunk.
    """
    layout = _shard_layout(array)
    box = _box(key, tuple(array.shape))
    if layout is None or box is None or not layout.aligned(box[0], box[1], tuple(array.shape)):
        return np.asarray(array[key])
    starts, extent, result = box
    shape = tuple(array.shape)
    out = np.zeros(extent, dtype=array.dtype)
    chunks_per_shard = layout.chunks_per_shard
    index_size = 16 * math.prod(chunks_per_shard) + 4
    where = {"path": Path(array.store.root), "array": array.path}
    for coords in layout.shards_of(starts, extent):
        try:
            data = (layout.folder / layout.key(coords)).read_bytes()
        except FileNotFoundError:
            continue  # no shard: every chunk is the fill value
        origin = [c * s for c, s in zip(coords, layout.shard, strict=True)]
        index_bytes = data[len(data) - index_size : len(data) - 4]
        crc = np.frombuffer(data[len(data) - 4 :], dtype="<u4")
        if len(data) < index_size or int(crc[0]) != google_crc32c.value(index_bytes):
            raise StoreError(f"shard {layout.key(coords)}: index checksum mismatch", **where)
        index = np.frombuffer(index_bytes, dtype="<u8").reshape(*chunks_per_shard, 2)
        view = memoryview(data)
        for local in np.ndindex(*chunks_per_shard):
            offset, length = (int(v) for v in index[local])
            if offset == int(_MAX_UINT64):
                continue
            first = [o + i * c for o, i, c in zip(origin, local, layout.chunk, strict=True)]
            if any(f >= n for f, n in zip(first, shape, strict=True)):
                continue
            try:
                chunk = layout.decode(view[offset : offset + length], layout.chunk)
            except Exception as exc:  # zstd frame checksum, corrupt AVIF, truncated data...
                raise StoreError(
                    f"unreadable chunk at {first}: {type(exc).__name__}: {exc}", **where
                ) from None
            target = tuple(
                slice(f - s, min(f + c, n) - s)
                for f, c, n, s in zip(first, layout.chunk, shape, starts, strict=True)
            )
            out[target] = chunk[tuple(slice(0, t.stop - t.start) for t in target)]
    return out.reshape(result)


class ImageArray:
    """An image array of a store being written, as `StoreWriter.create_images` returns it.

    Reads and attributes are the zarr array's. An assignment that covers whole shards is encoded here
    (module docstring); any other write goes through zarr. Either way the manifest checksums the array by its
    stored files when the store is closed, so nothing written any way goes unchecked.
    """

    def __init__(self, array: zarr.Array) -> None:
        self._array = array
        self._layout = _shard_layout(array)

    @property
    def zarr_array(self) -> zarr.Array:
        """The zarr array itself."""
        return self._array

    def __getattr__(self, name: str) -> Any:
        if name in ("_array", "_layout"):  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._array, name)

    def __getitem__(self, key: Any) -> Any:
        return self._array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        array = self._array
        shape = tuple(array.shape)
        box = _box(key, shape)
        if box is None:
            array[key] = value
            return
        starts, extent, result = box
        block = _as_block(value, np.dtype(array.dtype), extent, result)
        if self._layout is not None and self._layout.aligned(starts, extent, shape):
            _write_shards(self._layout, shape, starts, block)
        else:
            array[tuple(slice(s, s + e) for s, e in zip(starts, extent, strict=True))] = block


class StoreWriter:
    """Writes arrays and attributes into a store being built; obtained from `write_store` only."""

    def __init__(self, group: zarr.Group, path: Path, temporary: Path) -> None:
        self.group = group
        self.path = path  # the final path, named in errors; it exists only after success
        self.temporary = temporary  # the hidden sibling being written
        self._provenance_set = False
        self._checksums: dict[str, str] = {}  # decoded checksums of small arrays, taken while writing

    def _check_name(self, name: str) -> None:
        if not name or name.startswith("/") or name.endswith("/") or name in self.group:
            raise StoreError(f"invalid or duplicate array name {name!r}", path=self.path)
        if name.split("/")[0] in (MANIFEST_NAME,) or any(part.startswith(".") for part in name.split("/")):
            raise StoreError(f"array name {name!r} is reserved", path=self.path)

    def create_images(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: str | np.dtype = "uint8",
        *,
        codec: str = "zstd",
        quality: int = 90,
        shard_axes: int = 1,
        images_per_shard: int | None = None,
        attrs: dict | None = None,
    ) -> ImageArray:
        """Create an image array of shape (*leading, H, W, C) or (*leading, H, W), one image per chunk.

        A shard holds every image that shares the indices of the first `shard_axes` leading axes (0: one
        shard for the whole array, good for small arrays). `images_per_shard` additionally splits the next
        leading axis into blocks of that many, to bound the size of a shard. `codec` is "zstd" (lossless,
        any dtype), "jpeg" or "avif" (lossy, uint8 RGB only, `quality` 1..100). The caller fills the array by
        assignment, ideally one whole shard per assignment and the shards in C order (camera after camera,
        block after block): then the array is encoded in this thread (see the module docstring). Write only
        through the returned `ImageArray`, never through `group`.
        """
        self._check_name(name)
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise StoreError(f"image array {name!r}: bad shape {shape}", path=self.path)
        # (..., H, W, C) when the last axis looks like channels (1..4), else (..., H, W) single-channel.
        n_image_axes = 3 if len(shape) >= 3 and shape[-1] <= 4 else 2
        if codec in LOSSY_IMAGE_CODECS:
            if dtype != np.uint8 or n_image_axes != 3 or shape[-1] != 3:
                raise StoreError(
                    f"image array {name!r}: {codec} needs uint8 (..., H, W, 3), got {dtype} {shape}",
                    path=self.path,
                )
        elif codec != "zstd":
            raise StoreError(
                f"image array {name!r}: unknown codec {codec!r} (zstd, jpeg or avif)", path=self.path
            )
        leading = shape[: len(shape) - n_image_axes]
        if not 0 <= shard_axes <= len(leading):
            raise StoreError(
                f"image array {name!r}: shard_axes={shard_axes} but only {len(leading)} leading axes",
                path=self.path,
            )
        shard = [1] * shard_axes + list(leading[shard_axes:]) + list(shape[len(leading) :])
        if images_per_shard is not None:
            if images_per_shard < 1 or shard_axes >= len(leading):
                raise StoreError(
                    f"image array {name!r}: images_per_shard needs >= 1 and an axis after the shard axes",
                    path=self.path,
                )
            shard[shard_axes] = min(int(images_per_shard), leading[shard_axes])
        chunk = (1,) * len(leading) + shape[len(leading) :]
        try:
            inner = image_codecs(codec, quality)
        except ValueError as exc:
            raise StoreError(f"image array {name!r}: {exc}", path=self.path) from None
        array = self.group.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=chunk,
            shards=tuple(shard),
            serializer=inner[0],
            compressors=inner[1:] or None,
            fill_value=_fill_value(dtype),
            chunk_key_encoding=CHUNK_KEY_ENCODING,
            attributes=normalise_attrs(attrs or {}),
        )
        return ImageArray(array)  # checksummed by its stored files at close (manifest.checksum_kind)

    def write_array(self, name: str, data: np.ndarray, *, attrs: dict | None = None) -> zarr.Array:
        """Write a small array (intrinsics, w2c, fixed-width unicode ids, validity masks) as one zstd chunk.

        Variable-length strings (object arrays) are refused: fixed-width unicode ('<U8') has a fixed byte
        layout, so its checksum is well defined and it needs no extension data type.
        """
        self._check_name(name)
        data = np.asarray(data)
        if data.dtype.kind not in "biufcU":
            raise StoreError(
                f"array {name!r}: dtype {data.dtype} not supported (numbers, bool or fixed-width unicode)",
                path=self.path,
            )
        dtype = data.dtype.newbyteorder("<") if data.dtype.byteorder == ">" else data.dtype
        chunks = tuple(max(1, s) for s in data.shape) if data.ndim else ()
        serializer, compressor = zstd_codecs()
        with warnings.catch_warnings():
            # Fixed-width unicode has no Zarr v3 data type spec yet: zarr-python writes it as
            # "fixed_length_utf32" and warns. We accept that for ids: zarr-python reads it back exactly.
            warnings.simplefilter("ignore", UnstableSpecificationWarning)
            array = self.group.create_array(
                name,
                shape=data.shape,
                dtype=dtype,
                chunks=chunks,
                serializer=serializer,
                compressors=[compressor],
                fill_value=_fill_value(dtype),
                chunk_key_encoding=CHUNK_KEY_ENCODING,
                attributes=normalise_attrs(attrs or {}),
            )
        data = data.astype(dtype, copy=False)
        if data.size:
            array[...] = data
        self._checksums[name] = hashlib.sha256(content_bytes(data)).hexdigest()
        return array

    def checksums(self) -> dict[str, str]:
        """Decoded manifest checksums of the small arrays (`write_array`), hashed while written, by name."""
        return dict(self._checksums)

    def set_attrs(self, **attrs: Any) -> None:
        """Add or overwrite root attributes (e.g. ``random_weights=True`` once a network is known random).

        stage, subject, config and code_version are fixed by `write_store` and cannot be overwritten: they
        are the provenance of the store.
        """
        fixed = sorted(set(attrs) & set(PROVENANCE_ATTRS))
        if fixed and self._provenance_set:
            raise StoreError(f"root attributes {fixed} are set by write_store", path=self.path)
        current = dict(self.group.attrs.asdict())
        current.update(attrs)
        self.group.attrs.put(normalise_attrs(current))


@contextmanager
def write_store(
    path: str | Path,
    *,
    stage: str,
    subject: str,
    config: dict,
    extra_attrs: dict | None = None,
) -> Iterator[StoreWriter]:
    """Write a whole store; it appears at `path` only when the block finishes without an exception.

    Root attributes: stage, subject, config (the section that made the store), code_version and
    random_weights (False unless the caller sets it, through `extra_attrs` or `StoreWriter.set_attrs`; a stage
    that runs a network with random weights must set it True so nothing downstream mistakes it for a result).
    The manifest is written last, inside the temporary folder, then the folder is renamed into place.
    """
    from .manifest import write_manifest  # manifest imports this module for StoreError / open_store

    if not isinstance(config, dict):
        raise StoreError(f"config must be a dict, got {type(config).__name__}", path=path)
    with atomic_path(path, directory=True) as temporary:
        group = zarr.open_group(store=LocalStore(temporary), mode="w", zarr_format=3)
        writer = StoreWriter(group, Path(path), temporary)
        extra = dict(extra_attrs or {})
        if clash := sorted(set(extra) & set(PROVENANCE_ATTRS)):
            raise StoreError(f"extra_attrs may not set {clash}: write_store sets them", path=path)
        provenance = {
            "stage": stage,
            "subject": subject,
            "config": config,
            "code_version": avat3r_core.__version__,
        }
        writer.set_attrs(**provenance, random_weights=False, **extra)
        writer._provenance_set = True
        yield writer
        random_weights = group.attrs.get("random_weights")
        if not isinstance(random_weights, bool):
            raise StoreError(
                f"root attribute random_weights must be a bool, got {random_weights!r}", path=path
            )
        write_manifest(temporary, checksums=writer.checksums())


def _is_group_folder(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("zarr_format") == 3 and meta.get("node_type") == "group"


def open_group_checked(path: str | Path, *, require_manifest: bool = True) -> zarr.Group:
    """Open a store read-only after checking it is a finished Zarr v3 group; StoreError names the path."""
    path = Path(path)
    if not path.exists():
        raise StoreError("does not exist", path=path)
    if not path.is_dir():
        raise StoreError("is not a folder (a Zarr store is a folder)", path=path)
    if not (path / "zarr.json").is_file():
        raise StoreError("no zarr.json: not a Zarr v3 store", path=path)
    if not _is_group_folder(path):
        raise StoreError("zarr.json is not a Zarr v3 group", path=path)
    if require_manifest and not (path / MANIFEST_NAME).is_file():
        raise StoreError(f"no {MANIFEST_NAME}: incomplete store (not written by write_store)", path=path)
    try:
        return zarr.open_group(store=LocalStore(path, read_only=True), mode="r", zarr_format=3)
    except Exception as exc:
        raise StoreError(f"cannot open: {exc}", path=path) from None


def open_store(path: str | Path) -> zarr.Group:
    """Open a finished store read-only. Raises StoreError naming the path if it is missing, not a Zarr v3
    group, or incomplete (no manifest). Files that are not Zarr nodes, such as Snakemake's
    ``.snakemake_timestamp``, are ignored.
    """
    return open_group_checked(path)


def store_attrs(path: str | Path) -> dict:
    """Root attributes of a finished store (stage, subject, config, code_version, random_weights, ...)."""
    return dict(open_store(path).attrs.asdict())


def shard_count(shape: tuple[int, ...], shards: tuple[int, ...] | None) -> int:
    """Number of shard files an array of `shape` has when every shard is written (for planning)."""
    if shards is None:
        return 1
    return math.prod(math.ceil(s / c) for s, c in zip(shape, shards, strict=True))

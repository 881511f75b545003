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
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import LocalStore

import avat3r_core
from avat3r_core.errors import Avat3rError

from .atomic import atomic_path
from .codecs import image_codecs, zstd_codecs

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


class StoreWriter:
    """Writes arrays and attributes into a store being built; obtained from `write_store` only."""

    def __init__(self, group: zarr.Group, path: Path, temporary: Path) -> None:
        self.group = group
        self.path = path  # the final path, named in errors; it exists only after success
        self.temporary = temporary  # the hidden sibling being written
        self._provenance_set = False

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
    ) -> zarr.Array:
        """Create an image array of shape (*leading, H, W, C) or (*leading, H, W), one image per chunk.

        A shard holds every image that shares the indices of the first `shard_axes` leading axes (0: one
        shard for the whole array, good for small arrays). `images_per_shard` additionally splits the next
        leading axis into blocks of that many, to bound the size of a shard. `codec` is "zstd" (lossless,
        any dtype) or "avif" (lossy, uint8 RGB only, `quality` 0..100). The caller fills the array by
        assignment, ideally one whole shard per assignment (see the module docstring).
        """
        self._check_name(name)
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if len(shape) < 2 or any(s < 1 for s in shape):
            raise StoreError(f"image array {name!r}: bad shape {shape}", path=self.path)
        # (..., H, W, C) when the last axis looks like channels (1..4), else (..., H, W) single-channel.
        n_image_axes = 3 if len(shape) >= 3 and shape[-1] <= 4 else 2
        if codec == "avif":
            if dtype != np.uint8 or n_image_axes != 3 or shape[-1] != 3:
                raise StoreError(
                    f"image array {name!r}: avif needs uint8 (..., H, W, 3), got {dtype} {shape}",
                    path=self.path,
                )
        elif codec != "zstd":
            raise StoreError(f"image array {name!r}: unknown codec {codec!r} (zstd or avif)", path=self.path)
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
        return array

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
        if data.size:
            array[...] = data.astype(dtype, copy=False)
        return array

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
        write_manifest(temporary)


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

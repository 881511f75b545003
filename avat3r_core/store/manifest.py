"""The manifest inside every store: what arrays it holds, how they are stored, and checksums of their content.

Why: a store copied between clusters, half-synced, or hit by a bad disk must be detectable without trusting
file sizes or times (Snakemake's `.snakemake_timestamp` only records the folder's mtime). Two kinds of
checksum, named in each entry's "checksum" field:

- "decoded" (the small, unsharded arrays: intrinsics, ids, validity masks): a sha256 over the DECODED array
  bytes in C order (little-endian, fixed-width unicode as UTF-32), so it does not depend on the codec or the
  chunking. The writer hashes the data as it writes it (`StoreWriter.write_array`); arrays it did not write
  are read back here, a block of whole trailing axes at a time (bounded memory).
- "stored" (image arrays, i.e. every sharded array, lossless or lossy): a sha256 over the array's stored
  chunk and shard files (name, length, bytes, in name order). For AVIF the decoded pixels are not known
  without decoding every image again (~7 ms per 667 px crop) and depend on the encoder build as much as the
  stored bytes do; for zstd the stored bytes are 5-10x smaller than the decoded ones for the crops, so
  hashing them costs a fraction (measured 1.8 -> ~0.3 ms per image in benchmarks/preprocess.py), and every
  zstd frame carries its own checksum of the decoded content, which every read verifies. A flipped byte, a
  lost or swapped shard changes the stored checksum; `verify_store` re-hashes the files and, for a lossless
  array whose files changed, decodes it to name the broken chunk. The price: re-encoding an image array with
  another codec or zstd level changes its checksum (the content did not change, the bytes did).

Format 1 manifests (decoded checksums only, no "checksum" field) are still read and verified.

Files that are not Zarr nodes (Snakemake's `.snakemake_timestamp`, the manifest itself, editor backups) are
ignored: only folders holding a zarr.json are arrays or groups.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .atomic import write_json_atomic
from .codecs import AVIF_CODEC_NAME, JPEG_CODEC_NAME, codec_names
from .zarr_store import MANIFEST_NAME, StoreError, canonical, open_group_checked

MANIFEST_FORMAT = "avat3r-store-manifest/2"
READABLE_FORMATS = ("avat3r-store-manifest/1", MANIFEST_FORMAT)
LOSSY_CODECS = (AVIF_CODEC_NAME, JPEG_CODEC_NAME)
"""Arrays with one of these codecs anywhere in their pipeline get a "stored" checksum (module docstring)."""

BLOCK_BYTES = 64 * 2**20
"""Largest decoded block read at once while checksumming (one image, one camera's images, a whole array)."""


def _node_type(folder: Path) -> str | None:
    try:
        meta = json.loads((folder / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    return meta.get("node_type") if isinstance(meta, dict) else None


def array_names(root: str | Path) -> list[str]:
    """Paths of every array in the store, nested groups included, found from the zarr.json files.

    Walking the folders ourselves (instead of `Group.members`) ignores everything that is not a Zarr node,
    such as `.snakemake_timestamp` and `manifest.json`, without zarr's "not recognized" warnings.
    """
    root = Path(root)
    names: list[str] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        for child in sorted(folder.iterdir()):
            if child.name.startswith(".") or not child.is_dir():
                continue
            kind = _node_type(child)
            if kind == "array":
                names.append(child.relative_to(root).as_posix())
            elif kind == "group":
                pending.append(child)
    return sorted(names)


def _arrays(group: zarr.Group, root: str | Path) -> dict[str, zarr.Array]:
    """Every array in the store by its path inside the store."""
    arrays = {}
    for name in array_names(root):
        try:
            node = group[name]
        except Exception as exc:
            raise StoreError(f"unreadable zarr.json: {exc}", path=root, array=name) from None
        if isinstance(node, zarr.Array):
            arrays[name] = node
    return arrays


def _leading_axes_per_block(shape: tuple[int, ...], itemsize: int) -> int:
    """Fewest leading axes to iterate over so that one block (all remaining axes) is <= BLOCK_BYTES."""
    for k in range(len(shape) + 1):
        if math.prod(shape[k:]) * itemsize <= BLOCK_BYTES:
            return k
    return len(shape)


def _locate_bad_chunk(
    array: zarr.Array, index: tuple[int, ...], error: Exception
) -> tuple[list[int], Exception]:
    """Origin of the first chunk inside block `index` that fails to decode, so the message says which image
    (not just which array) is broken; falls back to the block itself if every chunk reads alone.
    """
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    grid = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    for axis, start in enumerate(index):
        grid[axis] = range(start, start + 1)
    for origin in itertools.product(*grid):
        window = tuple(slice(o, min(o + c, s)) for o, c, s in zip(origin, chunks, shape, strict=True))
        try:
            array[window]
        except Exception as exc:
            return list(origin), exc
    return list(index), error


def array_checksum(array: zarr.Array, *, name: str, path: str | Path) -> str:
    """sha256 of the decoded array in C order, read block by block; unreadable chunks raise StoreError."""
    digest = hashlib.sha256()
    shape = tuple(array.shape)
    k = _leading_axes_per_block(shape, array.dtype.itemsize)
    for index in np.ndindex(*shape[:k]):
        try:
            block = np.asarray(array[index] if index else array[...])
        except Exception as exc:  # zstd/AVIF decode errors, truncated shards, bad shard indices...
            origin, error = _locate_bad_chunk(array, index, exc)
            raise StoreError(
                f"unreadable chunk at {origin}: {type(error).__name__}: {error}", path=path, array=name
            ) from None
        digest.update(canonical(block).tobytes())
    return digest.hexdigest()


def stored_checksum(root: str | Path, name: str) -> str:
    """sha256 over the stored chunk and shard files of array `name` (not its zarr.json): for each file in
    name order its path inside the array folder, its length and its bytes."""
    folder = Path(root) / name
    digest = hashlib.sha256()
    files = sorted(
        (p.relative_to(folder).as_posix(), p)
        for p in folder.rglob("*")
        if p.is_file() and p.name != "zarr.json" and not p.name.startswith(".")
    )
    for relative, file in files:
        data = file.read_bytes()
        digest.update(relative.encode() + b"\0" + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _is_lossy(array: zarr.Array) -> bool:
    names = ",".join(codec_names(array.metadata.codecs))
    return any(codec in names for codec in LOSSY_CODECS)


def checksum_kind(array: zarr.Array) -> str:
    """The checksum kind of an array: "stored" for image arrays (sharded) and lossy codecs, else "decoded"
    (module docstring)."""
    return "stored" if array.shards is not None or _is_lossy(array) else "decoded"


def describe_array(
    array: zarr.Array, *, name: str, path: str | Path, known: str | None = None
) -> dict[str, Any]:
    """Manifest entry: shape, dtype, chunk and shard shape, codec names, checksum kind and checksum.

    `known` is the decoded checksum the writer took while writing, if any (used for "decoded" arrays only).
    """
    metadata = array.metadata
    kind = checksum_kind(array)
    if kind == "stored":
        digest = stored_checksum(path, name)
    else:
        digest = known or array_checksum(array, name=name, path=path)
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "chunks": list(array.chunks),
        "shards": list(array.shards) if array.shards is not None else None,
        "codecs": codec_names(metadata.codecs),
        "checksum": kind,
        "sha256": digest,
    }


def build_manifest(path: str | Path, checksums: dict[str, str] | None = None) -> dict[str, Any]:
    """The manifest of the store at `path` (complete or being written), as a JSON-ready dict.

    `checksums`: decoded checksums already known (taken by the writer), by array name; the others are
    computed here.
    """
    group = open_group_checked(path, require_manifest=False)
    arrays = _arrays(group, path)
    known = checksums or {}
    return {
        "format": MANIFEST_FORMAT,
        "arrays": {
            name: describe_array(arrays[name], name=name, path=path, known=known.get(name))
            for name in sorted(arrays)
        },
    }


def write_manifest(group_path: str | Path, checksums: dict[str, str] | None = None) -> Path:
    """Write ``manifest.json`` inside the store (atomically, sorted keys, so identical stores give identical
    manifests). `write_store` calls it last, before the store is renamed into place, with the checksums its
    writer took while writing.
    """
    manifest = build_manifest(group_path, checksums)
    target = Path(group_path) / MANIFEST_NAME
    write_json_atomic(target, manifest)
    return target


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a finished store; StoreError naming the path if it is absent or malformed."""
    target = Path(path) / MANIFEST_NAME
    try:
        manifest = json.loads(target.read_text())
    except FileNotFoundError:
        raise StoreError(f"no {MANIFEST_NAME}: incomplete store", path=path) from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"unreadable {MANIFEST_NAME}: {exc}", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        raise StoreError(f"{MANIFEST_NAME} is not a {MANIFEST_FORMAT} manifest", path=path)
    if not isinstance(manifest.get("arrays"), dict):
        raise StoreError(f"{MANIFEST_NAME} has no 'arrays' table", path=path)
    return manifest


def verify_store(path: str | Path) -> list[str]:
    """Re-read every array of a finished store and compare it with the manifest.

    Returns the sorted names of arrays that are missing, have another shape or dtype or checksum, or are
    present but not in the manifest (a store must be exactly what its manifest says). An empty list means the
    store is intact. Raises StoreError naming the array when a chunk of a lossless array cannot be decoded at
    all (e.g. a flipped byte inside a zstd frame), and naming the path when the store or its manifest is
    missing. "stored" arrays are checked by re-hashing their files: any changed byte names the array (and a
    lossless one whose files changed is decoded, so an unreadable chunk is named).
    """
    group = open_group_checked(path)
    expected = read_manifest(path)["arrays"]
    arrays = _arrays(group, path)
    bad = set(arrays) - set(expected)
    for name, entry in expected.items():
        array = arrays.get(name)
        if array is None:
            bad.add(name)
            continue
        if list(array.shape) != entry.get("shape") or str(array.dtype) != entry.get("dtype"):
            bad.add(name)
            continue
        if entry.get("checksum", "decoded") == "stored":
            digest = stored_checksum(path, name)
            if digest != entry.get("sha256") and not _is_lossy(array):
                array_checksum(array, name=name, path=path)  # StoreError naming an unreadable chunk
        else:
            digest = array_checksum(array, name=name, path=path)
        if digest != entry.get("sha256"):
            bad.add(name)
    return sorted(bad)

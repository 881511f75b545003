"""Atomic writes: an output appears at its final path only when it is complete.

A job killed halfway (SIGKILL, node failure, full disk) must never leave a file or folder that looks
finished, or a rerun would trust it. Everything is written to a hidden temporary sibling on the same file
system and moved into place with one rename.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_sibling(path: Path, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    handle, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(handle)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path`, on error it is removed.

    A folder output replaces an existing folder of the same name (Snakemake removes `directory()` outputs
    before a job anyway); the old one is deleted only after the new one is in place.
    """
    final = Path(path)
    temporary = _temporary_sibling(final, directory)
    try:
        yield temporary
        if directory:
            os.chmod(temporary, 0o755)  # mkdtemp creates 0700
            if final.exists():
                trash = _temporary_sibling(final, directory=True)
                os.rmdir(trash)
                os.replace(final, trash)
                os.replace(temporary, final)
                _remove(trash)
            else:
                os.replace(temporary, final)
        else:
            os.chmod(temporary, 0o644)
            os.replace(temporary, final)
    except BaseException:
        _remove(temporary)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write JSON (sorted keys, so identical content gives identical bytes) atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")

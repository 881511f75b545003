"""Atomic writes: an output appears at its final path only when it is complete.

A job killed halfway (SIGKILL, node failure, full disk) must never leave a file or folder that looks
finished, or a rerun would trust it. Everything is written to a hidden temporary sibling on the same file
system and moved into place with one rename.

A SIGKILL leaves its temporary sibling behind (at Ava-256 scale a store of many GB); the next write of the
same path removes such leftovers first. That assumes one writer per path at a time, which Snakemake
guarantees for its outputs (tests/faults checks both).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avat3r_core.errors import Avat3rError


class DiskFullError(Avat3rError, OSError):
    """The file system of an output filled up (ENOSPC, EDQUOT) while it was written; nothing was moved to
    the final path and the temporary sibling is removed. One line on the command line, not a traceback
    from inside the writer (zarr, torch, PIL)."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(
            error.errno,
            f"{error.strerror or error} while writing {path} (nothing was written there; free space or "
            "move the results folder, then rerun)",
        )

    def __str__(self) -> str:
        return str(self.strerror)


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


def _remove_stale_siblings(path: Path) -> None:
    """Temporary siblings of `path` left by a writer that was killed before it could remove them."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
            _remove(stale)


@contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path`, on error it is removed.

    A folder output replaces an existing folder of the same name (Snakemake removes `directory()` outputs
    before a job anyway); the old one is deleted only after the new one is in place.
    """
    final = Path(path)
    _remove_stale_siblings(final)
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
    except OSError as error:
        _remove(temporary)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            # name the outermost final path (a store's manifest is written inside its temporary folder)
            cause = error.__cause__ if isinstance(error, DiskFullError) else error
            raise DiskFullError(final, cause if isinstance(cause, OSError) else error) from cause
        raise
    except BaseException:
        _remove(temporary)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write JSON (sorted keys, so identical content gives identical bytes) atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")

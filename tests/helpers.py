"""Small helpers shared by tests that break a capture on purpose."""

from __future__ import annotations

import zipfile
from pathlib import Path


def rewrite_member(archive: Path, member: str, data: bytes) -> None:
    """Replace one member of a zip (keeping the others and the stored layout)."""
    with zipfile.ZipFile(archive) as source:
        contents = {name: source.read(name) for name in source.namelist()}
    contents[member] = data
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as target:
        for name, payload in contents.items():
            target.writestr(name, payload)

"""Seeds derived from (global seed, subject, stage), so every stage is reproducible on its own.

A rerun of one stage for one subject must reproduce its outputs bit for bit without rerunning anything
else, so no stage may draw from a shared random stream.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, subject: str, stage: str) -> int:
    """A 63-bit seed that changes with any of its inputs (sha256, stable across Python versions)."""
    digest = hashlib.sha256(f"{seed}/{subject}/{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1

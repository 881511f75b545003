"""Messages for strict checkpoint loading, shared by the network loaders.

A strict loader that fails must say which keys are missing and which were not expected, without printing
all 700 of them.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_NAMED_KEYS = 8


def name_keys(keys: Sequence[str]) -> str:
    """The first few keys, and how many more there are."""
    shown = ", ".join(keys[:MAX_NAMED_KEYS])
    return shown + (f" ... (+{len(keys) - MAX_NAMED_KEYS} more)" if len(keys) > MAX_NAMED_KEYS else "")


def key_mismatch(missing: Sequence[str], unexpected: Sequence[str]) -> list[str]:
    """Message parts naming missing and unexpected keys (empty when both are empty)."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {name_keys(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {name_keys(unexpected)}")
    return parts

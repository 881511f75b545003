"""The released Sapiens pretrain sizes, without PyTorch: the cost plan runs in Snakemake's own process.

`avat3r_core.models.sapiens` builds the networks from this table; `avat3r_core.plan` counts their FLOPs.
"""

from __future__ import annotations

PATCH_SIZE = 16
PRETRAIN_IMG_SIZE = 1024

# mmpretrain `VisionTransformer.arch_zoo` entries for the released pretrain models (FFN = 4 x width).
SAPIENS_ARCHS: dict[str, dict[str, int]] = {
    "sapiens_0.3b": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "sapiens_0.6b": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
    "sapiens_1b": {"embed_dim": 1536, "depth": 40, "num_heads": 24},
    "sapiens_2b": {"embed_dim": 1920, "depth": 48, "num_heads": 32},
}


def sapiens_arch_key(name: str) -> str:
    """The SAPIENS_ARCHS key of a model name (`sapiens_2b`, `2b`, any case); ValueError if unknown."""
    key = name.lower()
    if not key.startswith("sapiens_"):
        key = f"sapiens_{key}"
    if key not in SAPIENS_ARCHS:
        raise ValueError(f"unknown Sapiens model {name!r}; known: {', '.join(SAPIENS_ARCHS)}")
    return key

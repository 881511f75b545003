"""BackgroundMattingV2 (Lin et al., CVPR 2021): our port, its checkpoints, batched API.

Clean-room re-implementation with upstream's module and key names, so `pytorch_<backbone>.pth` and
`torchscript_<backbone>_fp32/fp16.pth` from the v1.0.0 release load unchanged (upstream code is MIT).
"""

from __future__ import annotations

from avat3r_core.models.bgmv2.checkpoint import (
    CheckpointError,
    MattingRefineTorchScriptWrapper,
    detect_backbone,
    export_torchscript,
    is_random_checkpoint,
    is_torchscript_file,
    load_model,
    load_state_dict_strict,
    load_torchscript,
    read_state_dict,
    write_random_checkpoint,
)
from avat3r_core.models.bgmv2.matting import BGMv2Matter, pad_multiple
from avat3r_core.models.bgmv2.network import BACKBONES, REFINE_MODES, MattingBase, MattingRefine, Refiner

__all__ = [
    "BACKBONES",
    "REFINE_MODES",
    "BGMv2Matter",
    "CheckpointError",
    "MattingBase",
    "MattingRefine",
    "MattingRefineTorchScriptWrapper",
    "Refiner",
    "detect_backbone",
    "export_torchscript",
    "is_random_checkpoint",
    "is_torchscript_file",
    "load_model",
    "load_state_dict_strict",
    "load_torchscript",
    "pad_multiple",
    "read_state_dict",
    "write_random_checkpoint",
]

"""Shared names, subject discovery and small helpers for every rule file."""

from avat3r_core.capture import subject_ids
from avat3r_core.config import section_json
from avat3r_core.stages import STAGE_VERSIONS

RESULTS = config["results"]
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
SYNTHETIC = config["synthetic"]["enabled"]
CAPTURE_ROOT = config["capture"]["root"]

# From the subject list (or the synthetic config), never from globbing thousands of image files.
SUBJECTS = subject_ids(config)


def sections(*names):
    """Config sections as canonical JSON params, so that a change reruns exactly the jobs that use them."""
    return section_json({name: config[name] for name in names})


def capture_input(wildcards):
    """A subject's capture files (the synthetic capture folder, or calibration and frame list)."""
    if SYNTHETIC:
        return rules.synthetic_capture.output.capture
    from avat3r_core.capture.ava256 import Ava256Capture

    decoder = Ava256Capture(
        CAPTURE_ROOT, wildcards.subject, subjects_csv=config["capture"]["subjects_csv"]
    ).decoder
    return [f"{decoder}/camera_calibration.json", f"{decoder}/frame_list.csv"]


def groundtruth_arg(wildcards):
    """`--groundtruth DIR` for synthetic captures, so matting logs its IoU against the true alpha."""
    return f"--groundtruth {config['synthetic']['groundtruth']}" if SYNTHETIC else ""


def positions_groundtruth_arg(wildcards):
    """`--groundtruth DIR` for the positions backend `groundtruth` (ORACLE maps) on synthetic captures."""
    if config["positions"]["backend"] != "groundtruth":
        return ""
    return groundtruth_arg(wildcards)


VARIANTS = list(config["variants"])


def variant_json(wildcards):
    """The seed, model and train sections of one variant (its overrides applied) as canonical JSON."""
    from avat3r_core.config import variant_sections

    return section_json(variant_sections(config, wildcards.variant))


def evaluate_json(wildcards):
    """The variant's sections plus the evaluate section."""
    from avat3r_core.config import variant_sections

    return section_json(
        dict(variant_sections(config, wildcards.variant), evaluate=config["evaluate"])
    )


def train_launcher(wildcards):
    """`avat3r`, or torchrun with one process per GPU when the train rule asks for several."""
    gpus = config["train"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc-per-node {gpus} -m avat3r_core.cli"
    return "avat3r"

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
    """Config sections as canonical JSON params, so that a change reruns exactly the jobs that use them.

    A function, not a string: Snakemake would read the braces of path templates in the config (such as
    capture.flame_tracking "{root}/gagavatar/{subject}/optim.pkl") as wildcards of a string param.
    """
    text = section_json({name: config[name] for name in names})
    return lambda wildcards: text


def capture_input(wildcards):
    """A subject's capture files, so that replacing one subject's files reruns only that subject's jobs.

    Synthetic: the generated capture folder (one directory output, tracked by its timestamp file; edits
    inside it are not seen: regenerate with `-R synthetic_capture`). NeRSemble: calibration, the selected
    sequences' videos and tracking, the clean plates. Ava-256: the files `capture_index` reads, which every later stage of the subject depends on: calibration, frame list, head poses, tracked
    meshes and the per-camera image zips (one listdir; absent optional files are left out).
    """
    if SYNTHETIC:
        return rules.synthetic_capture.output.capture
    if config["capture"]["dataset"] == "nersemble":
        from avat3r_core.capture.nersemble import open_nersemble

        reader = open_nersemble(config["capture"], wildcards.subject)
        return [str(path) for path in reader.input_files()]
    from avat3r_core.capture.ava256 import Ava256Capture

    decoder = Ava256Capture(
        CAPTURE_ROOT, wildcards.subject, subjects_csv=config["capture"]["subjects_csv"]
    ).decoder
    optional = [
        decoder / "head_pose" / "head_pose.zip",
        decoder / "kinematic_tracking" / "registration_vertices.zip",
        *sorted((decoder / "image").glob("cam*.zip")),
    ]
    required = [decoder / "camera_calibration.json", decoder / "frame_list.csv"]
    return [str(path) for path in required + [p for p in optional if p.is_file()]]


def groundtruth_arg(wildcards):
    """`--groundtruth DIR` for synthetic captures, so matting logs its IoU against the true alpha."""
    return f"--groundtruth {config['synthetic']['groundtruth']}" if SYNTHETIC else ""


def positions_groundtruth_arg(wildcards):
    """`--groundtruth DIR` for the positions backend `groundtruth` (ORACLE maps) on synthetic captures."""
    if config["positions"]["backend"] != "groundtruth":
        return ""
    return groundtruth_arg(wildcards)


# Trained here (none on an evaluation-only capture), and scored here: those plus evaluate.models.
from avat3r_core.config import evaluated_models, trained_variants

VARIANTS = trained_variants(config)
EVALUATED = evaluated_models(config)


def variant_json(wildcards):
    """The seed, model and train sections of one variant (its overrides applied) as canonical JSON."""
    from avat3r_core.config import variant_sections

    return section_json(variant_sections(config, wildcards.variant))


def evaluate_model(wildcards):
    """The model file a `variant` evaluation scores: the train rule's, or one named in evaluate.models."""
    return (
        EVALUATED.get(wildcards.variant)
        or f"{RESULTS}/train/{wildcards.variant}/model.pt"
    )


def evaluate_json(wildcards):
    """The variant's sections plus the evaluate section, and positions when joint DUSt3R maps are made.
    A model trained elsewhere brings its own model and train sections: only the keys of this run's train
    section that evaluation reads (renderer, device, LPIPS files) are passed."""
    from avat3r_core.config import variant_sections

    evaluate = {k: v for k, v in config["evaluate"].items() if k != "models"}
    if EVALUATED.get(wildcards.variant):
        train = config["train"]
        loss = {k: train["loss"][k] for k in ("lpips_alexnet", "lpips_heads")}
        chosen = dict(
            train=dict(renderer=train["renderer"], device=train["device"], loss=loss),
            evaluate=evaluate,
        )
    else:
        chosen = dict(variant_sections(config, wildcards.variant), evaluate=evaluate)
    if config["evaluate"]["positions"] == "joint":
        chosen["positions"] = config["positions"]
    return section_json(chosen)


def protocol_json(wildcards):
    """The keys of the evaluate section the protocol depends on (not the metrics: they rebuild nothing)."""
    evaluate = config["evaluate"]
    return section_json(
        {"evaluate": {k: evaluate[k] for k in ("split", "seed", "protocol")}}
    )


def dataset_label(wildcards):
    """The dataset's name, written into the dataset index and the protocol (`config.dataset_name`)."""
    from avat3r_core.config import dataset_name

    return dataset_name(config)


def protocol_file(wildcards):
    """A fixed protocol file (evaluate.protocol.file) as an input of the protocol rule; none otherwise."""
    fixed = config["evaluate"]["protocol"]["file"]
    return [fixed] if fixed else []


def train_extra_inputs(wildcards):
    """A variant's init_from model and mix indices: a fine-tune variant waits for the model it starts from."""
    from avat3r_core.config import variant_sections

    train = variant_sections(config, wildcards.variant)["train"]
    return [p for p in [train["init_from"], *(m["index"] for m in train["mix"])] if p]


def train_launcher(wildcards):
    """`avat3r`, or torchrun with one process per GPU when the train rule asks for several."""
    gpus = config["train"]["gpus"]
    if gpus > 1:
        return f"torchrun --standalone --nproc-per-node {gpus} -m avat3r_core.cli"
    return "avat3r"


# -- software environments (--use-conda) ------------------------------------------------------------------
# envs/*.yaml install this checkout (`pip install --editable ${AVAT3R_ROOT}[extra]`). Snakemake creates each
# environment from a copy of its file under .snakemake/conda/ (or --conda-prefix), where a relative path
# would not reach the checkout, so the path comes from this variable (pip expands it in requirement files).
import os

os.environ.update(AVAT3R_ROOT=os.path.realpath(workflow.basedir))

# Matting and positions run in the PyTorch environment of their network only with that backend; the other
# backends need the CPU environment alone, so a CPU-only run never builds a PyTorch environment.
MATTING_ENV = (
    "../envs/bgmv2.yaml"
    if config["matting"]["backend"] == "bgmv2"
    else "../envs/preprocess.yaml"
)
POSITIONS_ENV = (
    "../envs/dust3r.yaml"
    if config["positions"]["backend"] == "dust3r"
    else "../envs/preprocess.yaml"
)

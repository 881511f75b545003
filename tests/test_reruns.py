"""Reruns of single stages are exact: what Snakemake would run after each kind of change, through its API.

The tiny DAG is built once (a real run, ~1 min on 2 cores) on a capture read as a download
(`synthetic.enabled: false`, so that a subject's files are rule inputs; the generated capture is one
directory output, see `capture_input` in rules/common.smk). Every case then makes one change, asks
Snakemake's Python API for a dry run (`DAGApi.execute_workflow(executor="dryrun", updated_files=...)`,
which lists the outputs of every job that would run), maps those outputs back to (rule, subject or
variant) and undoes the change.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.capture.synthetic import SyntheticConfig, generate_synthetic_capture, synthetic_subject_ids
from avat3r_core.config import REPO_ROOT
from avat3r_core.stages import STAGE_VERSIONS
from tests.test_workflow import TINY, run_snakemake, tiny_config

pytestmark = pytest.mark.slow

SUBJECTS = synthetic_subject_ids(SyntheticConfig(**TINY))
# Per-subject outputs under results/{subject}/ and the rule that writes each.
SUBJECT_OUTPUTS = {
    "capture_index.json": "capture_index",
    "frames.json": "frames",
    "views.json": "views",
    "matting.zarr": "matting",
    "crops.zarr": "crop",
    "positions.zarr": "positions",
    "features.zarr": "features",
    "shard.zarr": "shards",
}
PER_SUBJECT = tuple(SUBJECT_OUTPUTS.values())
# dataset_index, the evaluation protocol, one train, evaluate and report_training job per variant of the
# default config (base and no_skips), the gather of every variant's metrics and the report's figure index.
VARIANTS = list(yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["variants"])
TAIL = {("dataset_index", ""), ("protocol", ""), ("gather", ""), ("report_figures", "")} | {
    (rule, variant) for rule in ("train", "evaluate", "report_training") for variant in VARIANTS
}
# The per-subject report pictures read these stages' outputs (crops, position maps, views, capture index).
PICTURED = {"capture_index", "views", "crop", "positions"}

Job = tuple[str, str]


def jobs(rules: Iterable[str], subjects: Iterable[str] = SUBJECTS, tail: bool = True) -> set[Job]:
    """The expected jobs: these rules for these subjects, plus their report pictures and the tail."""
    rules, subjects = set(rules), list(subjects)
    wanted = {(rule, subject) for rule in rules for subject in subjects}
    if not tail:
        return wanted
    pictures = {("report_subject", subject) for subject in subjects} if rules & PICTURED else set()
    return wanted | pictures | TAIL


def job_of(output: str) -> Job:
    """(rule, subject or variant) of a planned output path (relative to the working directory)."""
    parts = Path(output).relative_to("results").parts
    if parts == ("dataset_index.json",):
        return ("dataset_index", "")
    if parts == ("evaluate", "protocol.json"):
        return ("protocol", "")
    if parts[0] == "evaluate" and len(parts) == 2 and parts[1].startswith("summary."):
        return ("gather", "")
    if parts[0] in ("train", "evaluate") and len(parts) == 3:
        return (parts[0], parts[1])
    if parts == ("report", "figures.json"):
        return ("report_figures", "")
    if parts[:2] == ("report", "train") and len(parts) == 4:
        return ("report_training", parts[2])
    if parts[0] == "report" and len(parts) == 3:
        return ("report_subject", parts[1])
    if len(parts) == 2 and parts[1] in SUBJECT_OUTPUTS:
        return (SUBJECT_OUTPUTS[parts[1]], parts[0])
    raise AssertionError(f"unexpected planned output {output}")


def planned(workdir: Path, config: Path | None = None, **dag: object) -> set[Job]:
    """The jobs a dry run would execute: Snakemake's API, `execute_workflow(executor="dryrun")`."""
    updated: list[str] = []
    configfiles = [workdir / "config.yaml"] + ([config] if config else [])
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=REPO_ROOT / "Snakefile",
            workdir=workdir,
        )
        workflow.dag(DAGSettings(targets={"all"}, **dag)).execute_workflow(
            executor="dryrun", updated_files=updated
        )
    return {job_of(output) for output in updated}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory whose whole DAG has run once (tiny capture, 2 subjects, 2 training steps)."""
    workdir = tmp_path_factory.mktemp("reruns")
    capture = workdir / "capture"
    generate_synthetic_capture(
        capture, workdir / "groundtruth", SyntheticConfig(**TINY), workers=2, progress=False
    )
    path = tiny_config(workdir)
    config = yaml.safe_load(path.read_text())
    config["synthetic"]["enabled"] = False
    config["capture"]["root"] = str(capture)
    config["positions"]["backend"] = "mesh"  # groundtruth maps need the synthetic rule's ground truth
    path.write_text(yaml.safe_dump(config))
    run_snakemake(workdir, "--configfile", str(path), "--cores", "2")
    assert planned(workdir) == set()
    return workdir


def variant_config(workdir: Path, name: str, change: dict[str, dict]) -> Path:
    """A second config file with some section keys replaced (merged over config.yaml by Snakemake)."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for section, values in change.items():
        config[section].update(values)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def restored(path: Path) -> Iterator[Path]:
    """Yield `path` for editing; afterwards put back its exact bytes and modification time."""
    stat, content = path.stat(), path.read_bytes()
    try:
        yield path
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 60 * 10**9))


def test_nothing_changed_reruns_nothing(built: Path) -> None:
    assert planned(built) == set()


def test_matting_config_reruns_matting_and_descendants(built: Path) -> None:
    config = variant_config(built, "matting", {"matting": {"plate_difference": {"high_factor": 7.0}}})
    assert planned(built, config) == jobs(["matting", "crop", "positions", "features", "shards"])


def test_one_subject_images_rerun_that_subject_only(built: Path) -> None:
    subject = SUBJECTS[0]
    reader = Ava256Capture(built / "capture", subject)
    image_zip = sorted((reader.decoder / "image").glob("cam*.zip"))[0]
    with restored(image_zip):
        # Same content, newer mtime: small files (< --max-checksum-file-size, 1 MB) are compared by checksum.
        bump_mtime(image_zip)
        assert planned(built) == set()
        # Ava-256's zips are larger than that: there a newer mtime alone reruns the subject.
        assert planned(built, max_checksum_file_size=0) == jobs(PER_SUBJECT, [subject])
        # The images replaced (the same AVIFs repacked, so the zip's bytes differ).
        with zipfile.ZipFile(image_zip) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
        with zipfile.ZipFile(image_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
        bump_mtime(image_zip)
        assert planned(built) == jobs(PER_SUBJECT, [subject])
    assert planned(built) == set()


def test_sapiens_checkpoint_reruns_features_and_descendants(built: Path) -> None:
    config = variant_config(
        built, "sapiens", {"features": {"checkpoint": str(built / "sapiens_tiny.pth"), "model": "tiny"}}
    )
    assert planned(built, config) == jobs(["features", "shards"])


def test_stage_version_bump_reruns_that_stage_and_descendants(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Snakefile reads STAGE_VERSIONS from the imported module, so the bump is seen in this process.
    monkeypatch.setitem(STAGE_VERSIONS, "crop", STAGE_VERSIONS["crop"] + 1)
    assert planned(built) == jobs(["crop", "positions", "features", "shards"])


def test_comment_in_stage_module_reruns_nothing(built: Path) -> None:
    with restored(REPO_ROOT / "avat3r_core" / "stages" / "crop.py") as module:
        module.write_text(module.read_text() + "# a comment: no output changes\n")
        bump_mtime(module)
        assert planned(built) == set()


def test_touching_unrelated_file_reruns_nothing(built: Path) -> None:
    readme = REPO_ROOT / "README.md"
    stat = readme.stat()
    try:
        bump_mtime(readme)
        assert planned(built) == set()
    finally:
        os.utime(readme, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_recipe_forcerun_until(built: Path) -> None:
    # `snakemake -R matting --until shards`: matting and its descendants up to the shards, nothing after.
    assert planned(built, forcerun={"matting"}, until={"shards"}) == jobs(
        ["matting", "crop", "positions", "features", "shards"], tail=False
    )

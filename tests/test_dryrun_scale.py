"""An Ava-256-sized DAG (256 subjects x 80 cameras x 5000 frames) builds in a dry run in under 30 seconds.

Measured as the CPU time of the `snakemake -n` process, which on an idle machine is its wall time (DAG
building is single-threaded), so that other work sharing the cores does not fail the test (idle 2-core
machine: ~9 s wall for 2,056 jobs).

The capture is a skeleton in the release layout with everything a dry run reads and nothing else: the
subject list, and per subject `camera_calibration.json` (80 cameras), `frame_list.csv` (5000 frames) and one
image zip per camera holding no images (each subject's jobs depend on its zips, `capture_input` in
rules/common.smk). No job runs, so no image is ever needed.
"""

from __future__ import annotations

import json
import resource
import time
import zipfile
from pathlib import Path

import yaml

from avat3r_core.config import REPO_ROOT
from tests.test_workflow import run_snakemake

AVA256 = {"subjects": 256, "cameras": 80, "frames": 5000}
BUDGET_S = 30.0
PER_SUBJECT_RULES = ("capture_index", "frames", "views", "matting", "crop", "positions", "features", "shards")


def write_capture_skeleton(root: Path, subjects: int, cameras: int, frames: int) -> list[str]:
    """A capture in the Ava-256 layout without images; returns the subject ids."""
    root.mkdir(parents=True, exist_ok=True)
    camera_ids = [f"{400000 + 17 * i}" for i in range(cameras)]
    identity = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    calibration = json.dumps(
        {
            "KRT": [
                {"cameraId": c, "K": [[5000, 0, 0], [0, 5000, 0], [1334, 2048, 1]], "T": identity}
                for c in camera_ids
            ]
        }
    )
    frame_list = "seg_id,frame_id\n" + "".join(f"EXP_free_face,{i}\n" for i in range(frames))
    empty_zip = root / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    empty = empty_zip.read_bytes()
    empty_zip.unlink()
    rows, ids = ["mcd,sid,mct"], []
    for s in range(subjects):
        sid, mcd, mct = f"SKL{s:03d}", f"2023{s // 28 + 1:02d}{s % 28 + 1:02d}", f"{1000 + s}"
        rows.append(f"{mcd},{sid},{mct}")
        ids.append(sid)
        decoder = root / f"{mcd}--{mct}--{sid}" / "decoder"
        (decoder / "image").mkdir(parents=True)
        (decoder / "camera_calibration.json").write_text(calibration)
        (decoder / "frame_list.csv").write_text(frame_list)
        for camera in camera_ids:
            (decoder / "image" / f"cam{camera}.zip").write_bytes(empty)
    (root / "256_ids.csv").write_text("\n".join(rows) + "\n")
    return ids


def skeleton_config(workdir: Path, root: Path) -> Path:
    """The default config on the skeleton capture at the paper's sizes (crops 512/667, Sapiens-2B)."""
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["synthetic"]["enabled"] = False
    config["capture"]["root"] = str(root)
    config["positions"]["backend"] = "mesh"
    config["crop"].update(input_size=512, supervision_size=667)
    config["features"].update(input_size=1024)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ava256_sized_dry_run_builds_its_dag_in_time(tmp_path: Path) -> None:
    subjects = write_capture_skeleton(tmp_path / "capture", **AVA256)
    config = skeleton_config(tmp_path, tmp_path / "capture")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = run_snakemake(tmp_path, "--configfile", str(config), "-n", "--quiet", "rules")
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counts = dict(line.split()[:2] for line in result.stdout.splitlines() if len(line.split()) == 2)
    for rule in PER_SUBJECT_RULES:
        assert counts.get(rule) == str(len(subjects)), (rule, counts)
    assert counts.get("dataset_index") == "1"
    assert "avat3r plan for this run" not in result.stdout + result.stderr  # onstart: not on dry runs
    print(f"Ava-256-sized dry run: {cpu:.1f} CPU s, {wall:.1f} s wall, {counts.get('total')} jobs")
    # CPU seconds of the Snakemake process (startup, parsing, DAG, dry-run listing): what the dry run costs
    # on an idle machine (it is single-threaded), whatever else shares the cores while the test runs.
    assert cpu < BUDGET_S, f"the dry run took {cpu:.1f} CPU seconds (budget {BUDGET_S:.0f} s)"

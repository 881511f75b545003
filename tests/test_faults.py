"""Faults: SIGKILL a job of every stage at a seeded random moment, rerun, and get the uninterrupted outputs.

The harness (tests/faults/harness.py, whose docstring says what is compared and what is not) runs the tiny
DAG once without faults and once more with faults, rerunning until it completes, while it watches every
final output path; then it fills a tmpfs under one subject's shard job. The counts are printed (`pytest -s`
shows them) for the README. About 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults import harness

pytestmark = pytest.mark.slow
SEED = int(os.environ.get("AVAT3R_FAULT_SEED", "8"))


def test_sigkill_of_every_stage_then_rerun_gives_identical_outputs(tmp_path: Path) -> None:
    reference = harness.reference_run(tmp_path / "reference")
    report = harness.faulted_runs(tmp_path / "faulted", reference, seed=SEED)
    comparison = harness.compare(reference, tmp_path / "faulted")
    full_disk = harness.full_disk_shard(tmp_path / "faulted", harness.subjects(tmp_path / "faulted")[0])

    lines = [
        f"stages (rules running `avat3r <subcommand>`): {len(reference.stages)} {reference.stages}",
        f"fault injection (seed {SEED}): {len(report.faults)} faults injected (SIGKILL, one per stage: "
        + ", ".join(f"{f.rule} at {f.after_s:.2f}s" for f in report.faults)
        + f"), {len(report.missed)} kills came after the process had finished and were retried",
        f"runs: 1 uninterrupted ({reference.seconds:.0f}s) + {report.runs} with faults, i.e. "
        f"{report.reruns} reruns ({report.seconds:.0f}s)",
        *(f"  {line}" for line in report.run_log),
        f"outputs compared: {comparison.outputs} final outputs ({comparison.files} files, sha256) + "
        f"{comparison.train_log_steps} train_log steps + {comparison.tensorboard_values} TensorBoard values; "
        f"differences: {len(comparison.differences)}",
        "not compared byte for byte: "
        + "; ".join(f"{k} ({v})" for k, v in {**harness.EXCLUDED, **harness.NONDETERMINISTIC}.items()),
        f"final paths checked while the runs wrote them: {report.visibility_checks} appearances/changes, "
        f"{len(report.violations)} half-written, {report.vanished} removed by Snakemake while being read",
        "temporary siblings left by killed writers (never at a final path): "
        f"{len(comparison.temporary_leftovers)}"
        + (f" {comparison.temporary_leftovers}" if comparison.temporary_leftovers else ""),
        f"stray processes after runs: {report.strays}",
        "full disk: "
        + (
            f"SKIPPED ({full_disk.skipped})"
            if full_disk.skipped
            else f"shards job on a {full_disk.tmpfs_kib} KiB tmpfs exited {full_disk.returncode}; "
            f"error: {full_disk.error_line!r} (traceback: {full_disk.traceback}); "
            f"shard at its final path: {full_disk.final_path_exists}; "
            f"temporary siblings left: {full_disk.temporary_left}"
        ),
    ]
    print("\n" + "\n".join(lines))

    assert {f.rule for f in report.faults} == set(reference.stages), report.run_log
    assert len(report.faults) == len(reference.stages)
    assert report.violations == [], report.violations
    assert comparison.differences == [], comparison.differences
    assert comparison.temporary_leftovers == []  # swept by the next write of the same path
    if full_disk.skipped:
        pytest.skip(f"full-disk check: {full_disk.skipped} (the faults above passed)")
    assert full_disk.returncode != 0
    assert "No space left on device" in full_disk.error_line and "shard.zarr" in full_disk.error_line
    assert not full_disk.traceback  # one line naming the output (avat3r_core.store.atomic.DiskFullError)
    assert not full_disk.final_path_exists and full_disk.temporary_left == []


def test_resumed_training_saves_the_same_checkpoint(shard_index, tmp_path: Path) -> None:
    """Not only the weights (tests/test_train.py): the optimiser and the RNG state too, so that model.pt
    after a resume has the checksum of an uninterrupted run's (the harness compares the bytes in the DAG,
    where the paths are the same; torch.save's serialization id depends on the file's path)."""
    import torch

    from avat3r_core.recon.checkpoint import load_checkpoint
    from avat3r_core.recon.train import run_training
    from tests.test_train import config

    def same(a: Path, b: Path) -> None:
        x, y = load_checkpoint(a), load_checkpoint(b)
        assert x["step"] == y["step"] and x["config"] == y["config"]
        assert all(torch.equal(x["model"][k], y["model"][k]) for k in x["model"])
        assert torch.equal(x["rng"]["torch"], y["rng"]["torch"]), "RNG state differs after a resume"
        sx, sy = x["optimizer"]["state"], y["optimizer"]["state"]
        assert all(torch.equal(sx[i][k], sy[i][k]) for i in sx for k in sx[i])

    straight = run_training(config(steps=4), shard_index, tmp_path / "a", progress=False)
    run_training(config(steps=2), shard_index, tmp_path / "b", progress=False)
    same(straight, run_training(config(steps=4), shard_index, tmp_path / "b", progress=False))
    # Resuming a finished run's last.pt (e.g. after --forcerun train) changes nothing either.
    same(straight, run_training(config(steps=4), shard_index, tmp_path / "b", progress=False))

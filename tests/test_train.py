"""Training: exact resumption, checkpoints that are never broken, clear failures, signals, and DDP on gloo.

The shard fixture is the first tiny synthetic subject (64 px input crops, 83 px supervision crops, 8x8
tiny-Sapiens feature grids of width 32), so the model is the tiny preset at 64 px.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avat3r_core.config import validate_sections
from avat3r_core.recon.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from avat3r_core.recon.model import Avat3rModel
from avat3r_core.recon.sampling import StepSampler
from avat3r_core.recon.train import Trainer, TrainingError, build_model_config, run_training

MODEL = {"preset": "tiny", "image_size": 64, "feature_dim": 32}
TRAIN = {
    "steps": 3,
    "n_supervision": 2,
    "num_workers": 0,
    "lr": 1e-3,
    "log_every": 1,
    "checkpoint_every": 1,
    "image_every": 1,
    "renderer": "torch",
    "device": "cpu",
    "loss": {"lpips": 0.0},
}


def config(**train: object) -> dict:
    return validate_sections({"seed": 0, "model": dict(MODEL), "train": {**TRAIN, **train}})


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa if wa[k].numel())
    assert worst <= atol, f"weights differ by {worst}"


# ------------------------------------------------------------------ data order


def test_step_sampler_resumes_and_splits_ranks_without_overlap() -> None:
    full = StepSampler(10, 2, seed=4)
    stream = [full.step_indices(s) for s in range(12)]
    resumed = StepSampler(10, 2, seed=4, start_step=5)
    it = iter(resumed)
    assert [next(it) for _ in range(4)] == stream[5] + stream[6]
    # Two ranks with batch 1 read exactly what one process with batch 2 reads, step by step.
    ranks = [StepSampler(10, 1, seed=4, rank=r, world_size=2) for r in range(2)]
    for s in range(12):
        assert ranks[0].step_indices(s) + ranks[1].step_indices(s) == stream[s]
    # Every epoch is a permutation of the dataset, and epochs differ.
    flat = [i for step in stream for i in step]
    epochs = [sorted(i % 10 for i in flat[e * 10 : (e + 1) * 10]) for e in range(2)]
    assert epochs == [list(range(10))] * 2
    assert [i % 10 for i in flat[:10]] != [i % 10 for i in flat[10:20]]
    assert {i // 10 for i in flat[:10]} == {0} and {i // 10 for i in flat[10:20]} == {1}


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_refuses_non_finite_weights_and_keeps_the_last_good_one(tmp_path) -> None:
    model = Avat3rModel(build_model_config(MODEL))
    path = tmp_path / "last.pt"
    save_checkpoint(path, model=model, optimizer=None, step=1, config={"model": {}})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match=r"step 2: refusing .* non-finite"):
        save_checkpoint(path, model=model, optimizer=None, step=2, config={"model": {}})
    state = load_checkpoint(path)
    assert state["step"] == 1
    assert all(torch.equal(state["model"][k], good[k]) for k in good)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_corrupt_checkpoint_is_named(tmp_path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is unreadable"):
        load_checkpoint(path)


# ------------------------------------------------------------------ training runs


def test_resumed_run_equals_uninterrupted_run(shard_index, tmp_path) -> None:
    straight = run_training(config(steps=4), shard_index, tmp_path / "a", progress=False)
    run_training(config(steps=2), shard_index, tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["step"] == 2
    resumed = run_training(config(steps=4), shard_index, tmp_path / "b", progress=False)
    assert load_checkpoint(resumed)["step"] == 4
    assert_same_weights(straight, resumed)
    # The run logged every step, TensorBoard events exist, and a different seed gives different weights.
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert all(np.isfinite(entry["total"]) and entry["gaussians"] > 0 for entry in log)
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))
    other = run_training(config(steps=4, seed=1), shard_index, tmp_path / "c", progress=False)
    with pytest.raises(AssertionError, match="weights differ"):
        assert_same_weights(straight, other)


def test_training_lowers_the_loss_on_a_fixed_batch(shard_index, tmp_path) -> None:
    trainer = Trainer(config(lr=3e-3), shard_index, tmp_path, progress=False)
    batch = next(iter(trainer._loader()))
    losses = [trainer.train_step(batch)[0]["total"] for _ in range(12)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_resume_with_another_config_is_refused(shard_index, tmp_path) -> None:
    run_training(config(steps=1), shard_index, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"another config \(train.lr: 0.001 -> 0.01\)"):
        Trainer(config(steps=2, lr=1e-2), shard_index, tmp_path, progress=False)
    # Keys that do not change the result (more steps, logging) may change.
    Trainer(config(steps=5, log_every=3), shard_index, tmp_path, progress=False)


def test_fine_tuning_from_a_checkpoint_of_another_size_is_refused(shard_index, tmp_path) -> None:
    source = run_training(config(steps=1), shard_index, tmp_path / "a", progress=False)
    wide = validate_sections({"model": dict(MODEL, width=32), "train": {**TRAIN, "init_from": str(source)}})
    with pytest.raises(
        CheckpointError, match=r"does not fit this model .*model config differs: width: 64 -> 32"
    ):
        Trainer(wide, shard_index, tmp_path / "b", progress=False)


def test_shard_from_another_config_is_refused(shard_index, tmp_path) -> None:
    wrong = validate_sections({"model": dict(MODEL, feature_dim=48), "train": TRAIN})
    with pytest.raises(
        TrainingError, match=r"subject \w+: array features has 32 channels, the model expects 48"
    ):
        Trainer(wrong, shard_index, tmp_path, progress=False)


def test_nan_loss_names_step_and_sample_and_writes_nothing(shard_index, tmp_path, monkeypatch) -> None:
    trainer = Trainer(config(), shard_index, tmp_path, progress=False)
    real = trainer.loss.forward

    def poisoned(pred, target, step):
        terms = real(pred, target, step)
        terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(trainer.loss, "forward", poisoned)
    with pytest.raises(
        TrainingError, match=r"step 0: loss is not finite \(subjects \['\w+'\], items \[\d+\]\)"
    ):
        trainer.run()
    assert not trainer.checkpoint_path.exists()


def test_out_of_memory_names_step_and_sample(shard_index, tmp_path, monkeypatch) -> None:
    trainer = Trainer(config(), shard_index, tmp_path, progress=False)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr("avat3r_core.recon.train.render_supervision", exhausted)
    with pytest.raises(TrainingError, match=r"step 0: out of memory on cpu \(subjects \['\w+'\], items"):
        trainer.run()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "avat3r_core.cli", "-q", *args]


def test_sigterm_checkpoints_and_exits_75_then_the_rerun_resumes(shard_index, tmp_path) -> None:
    cfg = json.dumps(config(steps=10_000))
    out = tmp_path / "run"
    job = subprocess.Popen(
        _cli("train", "--config", cfg, "--index", str(shard_index), "--out", str(out)),
        stderr=subprocess.PIPE,
        text=True,
    )
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2):
        assert job.poll() is None, job.stderr.read()
        assert time.monotonic() < deadline, "no training step within 120 s"
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 75, stderr
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert step >= 2
    assert f"SIGTERM at step {step}: checkpoint written" in stderr
    assert not (out / "model.pt").exists()
    resumed = run_training(config(steps=step + 1), shard_index, out, progress=False)
    assert load_checkpoint(resumed)["step"] == step + 1


def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(shard_index, tmp_path) -> None:
    single = run_training(config(steps=2, batch_size=2), shard_index, tmp_path / "single", progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "avat3r_core.cli",
        "-q",
        "train",
        "--config",
        json.dumps(config(steps=2, batch_size=1)),
        "--index",
        str(shard_index),
        "--out",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_weights(single, tmp_path / "ddp" / "model.pt", atol=1e-5)


def test_bf16_on_the_cpu_is_refused(shard_index, tmp_path) -> None:
    with pytest.raises(TrainingError, match=r"'train\.precision': bf16 autocast is only supported on CUDA"):
        Trainer(config(precision="bf16"), shard_index, tmp_path, progress=False)


def test_fine_tuning_starts_from_the_source_weights_at_step_zero(shard_index, tmp_path) -> None:
    source = run_training(config(steps=2), shard_index, tmp_path / "a", progress=False)
    trainer = Trainer(config(init_from=str(source)), shard_index, tmp_path / "b", progress=False)
    assert trainer.step == 0
    saved = weights(source)
    assert all(torch.equal(value, saved[name]) for name, value in trainer.model.state_dict().items())
    assert not trainer.optimizer.state  # a fresh optimiser


def test_mixing_a_second_index_by_weight(shard_index, tmp_path) -> None:
    from avat3r_core.recon.data import WeightedConcat

    mixed = config(steps=1, mix=[{"index": str(shard_index), "weight": 3.0}])
    trainer = Trainer(mixed, shard_index, tmp_path, progress=False)
    assert isinstance(trainer.dataset, WeightedConcat)
    assert np.allclose(np.diff([0.0, *trainer.dataset.cumulative]), [0.25, 0.75])
    assert load_checkpoint(trainer.run())["step"] == 1

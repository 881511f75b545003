"""Training Avat3r from the shards: one process, or many under ``torchrun`` (DistributedDataParallel).

What a multi-day run on a cluster needs, and why it is here:

* **Exact resumption.** The data order is a pure function of (seed, step, rank) (:mod:`.sampling`), and a
  checkpoint holds model, optimiser, step and RNG states, so a run stopped at step k and resumed gives the
  same weights as one that never stopped (tested).
* **Time limits.** SIGTERM or SIGUSR1 (SLURM's warning signal, ``--signal=USR1@300``) makes every rank
  finish its step, rank 0 writes the checkpoint, and the process exits with status 75 (EX_TEMPFAIL); the
  rerun (Snakemake ``retries``, or a SLURM requeue) resumes from it.
* **Never a broken checkpoint.** A NaN loss stops training naming the step and samples before anything is
  written; checkpoints are written atomically and refuse non-finite weights (:mod:`.checkpoint`).
* **Clear failures.** A shard built for another config (crop size, feature width), a checkpoint of another
  model size and an out-of-memory step each fail with one line saying what and where.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from avat3r_core.errors import Avat3rError
from avat3r_core.metrics.image import psnr
from avat3r_core.recon.checkpoint import (
    CheckpointError,
    config_differences,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    unwrap,
)
from avat3r_core.recon.compat import DataSignature, training_signature
from avat3r_core.recon.data import Avat3rShardDataset, WeightedConcat
from avat3r_core.recon.distributed import (
    DistributedContext,
    any_rank,
    barrier,
    init_distributed,
    mean_over_ranks,
    shutdown,
)
from avat3r_core.recon.losses import PhotometricLoss
from avat3r_core.recon.model import Avat3rModel, ModelConfig
from avat3r_core.recon.predict import SampleRender, image_grid, render_supervision, to_device
from avat3r_core.recon.sampling import EpochIndexed, StepSampler

log = logging.getLogger("avat3r.train")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped on purpose, rerun to resume
CHECKPOINT_NAME = "last.pt"
FINAL_NAME = "model.pt"
# Train keys that may change between a checkpoint and its resumption without changing the result.
RESUME_FREE_KEYS = frozenset(
    {"steps", "checkpoint_every", "log_every", "image_every", "num_workers", "device", "resume", "progress"}
)


class TrainingError(Avat3rError):
    """Training cannot go on: NaN loss, out of memory, or data that does not fit the model."""


class TrainingInterrupted(Avat3rError):
    """A stop signal arrived; the checkpoint of ``step`` is written and a rerun resumes from it."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, step: int, path: Path, signal_name: str) -> None:
        self.step, self.path = step, path
        super().__init__(f"{signal_name} at step {step}: checkpoint written to {path}; rerun to resume")


def build_model_config(section: Mapping[str, Any]) -> ModelConfig:
    """``model:`` config section -> ModelConfig: a preset (tiny | paper) with any field overridden."""
    values = dict(section)
    preset = values.pop("preset", "tiny")
    if preset not in ("tiny", "paper"):
        raise TrainingError(f"config key 'model.preset': unknown preset {preset!r} (tiny | paper)")
    base = asdict(getattr(ModelConfig, preset)())
    base.update(values)
    return ModelConfig.from_dict(base)


class _StopSignals:
    """Remembers the first SIGTERM/SIGUSR1 so the loop can stop at a step boundary."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with contextlib.suppress(ValueError):  # not the main thread: signals cannot be caught there
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _build_dataset(train: Mapping[str, Any], index: Path, seed: int) -> Any:
    kwargs = {
        "n_views": train["n_views"],
        "n_supervision": train["n_supervision"],
        "same_timestep": train["same_timestep"],
        "seed": seed,
    }
    primary = Avat3rShardDataset(index, split="train", **kwargs)
    if not train["mix"]:
        return primary
    members, weights = [primary], [float(train["primary_weight"])]
    for entry in train["mix"]:
        members.append(Avat3rShardDataset(entry["index"], split=entry.get("split", "train"), **kwargs))
        weights.append(float(entry["weight"]))
    length = sum(len(m) for m in members)
    return WeightedConcat(members, weights, length=length, seed=seed)


def check_data_fits_model(dataset: Any, cfg: ModelConfig, signature: DataSignature | None = None) -> None:
    """Fail before training when a shard was built for another config than the model's."""
    if signature is not None and signature.expression_dim and signature.expression_dim != cfg.expression_dim:
        raise TrainingError(
            f"the {signature.expression_source} expression codes are {signature.expression_dim}-d, the model "
            f"takes {cfg.expression_dim} (set model.expression_dim: {signature.expression_dim})"
        )
    members = dataset.datasets if isinstance(dataset, WeightedConcat) else [dataset]
    for member in members:
        for subject in member.subjects:
            if subject.crop_size % cfg.patch_size:
                raise TrainingError(
                    f"subject {subject.name}: input crops are {subject.crop_size} px, not a multiple of the "
                    f"model's patch size {cfg.patch_size} (crop.input_size vs model.patch_size)"
                )
            if cfg.use_features:
                feats = member._group(subject, "features")["features"]
                grid, channels = feats.shape[2], feats.shape[-1]
                if channels != cfg.feature_dim:
                    raise TrainingError(
                        f"subject {subject.name}: array features has {channels} channels, the model expects "
                        f"{cfg.feature_dim} (model.feature_dim; features.model of the shard)"
                    )
                if grid != subject.crop_size // cfg.patch_size:
                    raise TrainingError(
                        f"subject {subject.name}: array features is a {grid}x{grid} grid, the model's token "
                        f"grid is {subject.crop_size // cfg.patch_size} (crop {subject.crop_size} / patch "
                        f"{cfg.patch_size})"
                    )


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _psnr(render: SampleRender) -> float:
    """PSNR of the mean squared error over all of a sample's supervision views (one pooled image)."""
    pooled = [image.detach().float().flatten(0, 1)[None] for image in (render.pred, render.target)]
    return float(psnr(*pooled))


def comparison_grid(render: SampleRender, max_views: int = 4) -> torch.Tensor:
    """(3, 3H, kW) image: ground truth over prediction over absolute error, for k supervision views."""
    gt, pred = render.target.float(), render.pred.detach().float().clamp(0, 1)
    error = (gt - pred).abs().mean(1, keepdim=True).expand_as(gt)
    return image_grid([gt, pred, error], max_views)


class Trainer:
    """Holds model, optimiser, data and logging of one training run; :meth:`run` trains to ``train.steps``."""

    def __init__(
        self,
        config: Mapping[str, Any],
        index: str | Path,
        out_dir: str | Path,
        *,
        progress: bool = True,
    ) -> None:
        self.config = {"seed": config.get("seed", 0), "model": config["model"], "train": config["train"]}
        self.train_cfg = dict(config["train"])
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.context: DistributedContext = init_distributed(self.train_cfg.get("device"))
        self.device = self.context.device
        self.model_cfg = build_model_config(config["model"])
        self.resolved = {
            "model": asdict(self.model_cfg),
            "train": self.train_cfg,
            "seed": self.config["seed"],
        }
        seed = int(self.train_cfg["seed"])

        self.dataset = _build_dataset(self.train_cfg, Path(index), seed)
        signature = training_signature(index, self.train_cfg["mix"])
        check_data_fits_model(self.dataset, self.model_cfg, signature)
        self.resolved["data"] = signature.as_dict()  # what evaluation checks its data against (compat.py)
        torch.manual_seed(seed)  # identical initial weights on every rank
        model = Avat3rModel(self.model_cfg)
        precision = self.train_cfg["precision"]
        if precision == "bf16" and self.device.type != "cuda":
            # Measured with torch 2.14 on x86: a bf16 strided convolution (the patch embedding) on the CPU
            # is off by about 100% of its output, so CPU bf16 would train a different network.
            raise TrainingError(
                "config key 'train.precision': bf16 autocast is only supported on CUDA (CPU bf16 "
                "convolutions are inaccurate); use fp32 or auto on the CPU"
            )
        self.amp_dtype = (
            torch.bfloat16
            if precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
            else None
        )
        checkpointing = self.train_cfg["gradient_checkpointing"]
        model.set_gradient_checkpointing(
            checkpointing is True or (checkpointing == "auto" and self.device.type == "cuda")
        )
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=float(self.train_cfg["lr"]), betas=tuple(self.train_cfg["betas"])
        )
        self.loss = PhotometricLoss.from_config(self.train_cfg["loss"]).to(self.device)
        self.background = torch.tensor(self.train_cfg["background"], dtype=torch.float32, device=self.device)
        self.step = 0
        self._restore()
        if self.context.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.writer = self._summary_writer() if self.context.is_main else None

    # ---------------------------------------------------------------- state
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoints" / CHECKPOINT_NAME

    def _restore(self) -> None:
        """Resume from this run's last checkpoint, or start from ``train.init_from`` (fine-tuning)."""
        path = self.checkpoint_path
        if self.train_cfg["resume"] and path.is_file():
            state = load_checkpoint(path)
            saved = state["config"]
            differences = config_differences(saved.get("model", {}), self.resolved["model"], "model.")
            differences += [
                d
                for d in config_differences(saved.get("train", {}), self.train_cfg, "train.")
                if d.split(":")[0].removeprefix("train.") not in RESUME_FREE_KEYS
            ]
            if differences:
                raise CheckpointError(
                    f"checkpoint {path} was made with another config ({'; '.join(differences)}); delete it "
                    "or set train.resume: false to start over"
                )
            load_model_weights(self.model, state, path, self.resolved["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            self.step = int(state["step"])
            log.info("resumed from %s at step %d", path, self.step)
        elif self.train_cfg["init_from"]:
            source = Path(self.train_cfg["init_from"])
            load_model_weights(self.model, load_checkpoint(source), source, self.resolved["model"])
            log.info("initialised from %s (fine-tuning; optimiser and step start fresh)", source)

    def save(self, path: Path | None = None) -> Path:
        path = path or self.checkpoint_path
        if self.context.is_main:
            save_checkpoint(
                path, model=self.model, optimizer=self.optimizer, step=self.step, config=self.resolved
            )
        barrier(self.context)
        return path

    def _summary_writer(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency; a stripped environment still trains
            log.warning("tensorboard is not installed: scalars go to train_log.jsonl only")
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # ---------------------------------------------------------------- steps
    def _loader(self) -> DataLoader:
        batch_size = int(self.train_cfg["batch_size"])
        sampler = StepSampler(
            len(self.dataset),
            batch_size,
            seed=int(self.train_cfg["seed"]),
            rank=self.context.rank,
            world_size=self.context.world_size,
            start_step=self.step,
        )
        workers = int(self.train_cfg["num_workers"])
        # Its own generator: starting an iterator draws the workers' base seed from the loader's generator,
        # which would otherwise be the global RNG, saved in checkpoints: a run resumed at step k would then
        # save another RNG state (and model.pt other bytes) than one that never stopped.
        generator = torch.Generator().manual_seed(int(self.train_cfg["seed"]) + self.context.rank)
        return DataLoader(
            EpochIndexed(self.dataset),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def train_step(self, batch: Mapping[str, Any]) -> tuple[dict[str, float], list[SampleRender]]:
        """One optimiser step on one batch; returns the loss terms (averaged over samples) and renders."""
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            maps = self.model(batch)
        renders, totals = [], {}
        n = len(batch["subject"])
        loss = torch.zeros((), device=self.device)
        for b in range(n):
            rendered = render_supervision(
                maps, batch, b, background=self.background, backend=self.train_cfg["renderer"]
            )
            terms = self.loss(rendered.pred, rendered.target, self.step)
            loss = loss + terms["total"] / n
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / n
            renders.append(rendered)
        if any_rank(not torch.isfinite(loss).item(), self.context):
            raise TrainingError(
                f"step {self.step}: loss is not finite (subjects {list(batch['subject'])}, items "
                f"{batch['index'].tolist()}); the last good checkpoint is kept at {self.checkpoint_path}"
            )
        loss.backward()
        clip = self.train_cfg["grad_clip"]
        if clip:
            totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(clip)))
        self.optimizer.step()
        return totals, renders

    def run(self) -> Path:
        """Train until ``train.steps``; write ``model.pt`` and return its path."""
        steps = int(self.train_cfg["steps"])
        self.out_dir.mkdir(parents=True, exist_ok=True)
        loader_iter = iter(self._loader())
        bar = tqdm(
            total=steps,
            initial=self.step,
            desc="train",
            disable=not (self.progress and self.context.is_main),
            dynamic_ncols=True,
        )
        history = (self.out_dir / "train_log.jsonl").open("a") if self.context.is_main else None
        log.info(
            "training Avat3r (%d parameters) on %s x %d from step %d to %d: %d samples per epoch, "
            "batch %d per rank",
            unwrap(self.model).num_parameters(),
            self.device,
            self.context.world_size,
            self.step,
            steps,
            len(self.dataset),
            int(self.train_cfg["batch_size"]),
        )
        terms: dict[str, float] = {}
        try:
            with _StopSignals() as stop:
                while self.step < steps:
                    started = time.perf_counter()
                    batch = to_device(next(loader_iter), self.device)
                    data_s = time.perf_counter() - started
                    try:
                        terms, renders = self.train_step(batch)
                    except Exception as error:
                        if _is_oom(error):
                            raise TrainingError(
                                f"step {self.step}: out of memory on {self.device} (subjects "
                                f"{list(batch['subject'])}, items {batch['index'].tolist()}): {error}; lower "
                                "train.n_supervision or train.batch_size, or enable gradient checkpointing"
                            ) from error
                        raise
                    self.step += 1
                    terms["psnr"] = float(np.mean([_psnr(r) for r in renders]))
                    terms["gaussians"] = float(np.mean([r.n_gaussians for r in renders]))
                    terms["data_s"], terms["step_s"] = data_s, time.perf_counter() - started
                    self._log(terms, renders, history)
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['total']:.4f}", psnr=f"{terms['psnr']:.2f}")
                    if self.step % int(self.train_cfg["checkpoint_every"]) == 0:
                        self.save()
                    if any_rank(stop.received is not None, self.context):
                        path = self.save()
                        raise TrainingInterrupted(self.step, path, stop.received or "stop signal")
            self.save()
            final = self.out_dir / FINAL_NAME
            self.save(final)
            if terms:
                log.info(
                    "step %d: loss %.4f, PSNR %.2f dB on the last batch; model written to %s",
                    self.step,
                    terms["total"],
                    terms["psnr"],
                    final,
                )
            return final
        finally:
            bar.close()
            if history is not None:
                history.close()
            if self.writer is not None:
                self.writer.close()

    def _log(self, terms: dict[str, float], renders: list[SampleRender], history: Any) -> None:
        every = int(self.train_cfg["log_every"])
        if self.step % every and self.step != 1:
            return
        terms = {key: mean_over_ranks(value, self.context) for key, value in terms.items()}
        if not self.context.is_main:
            return
        history.write(json.dumps({"step": self.step, **terms}) + "\n")
        history.flush()
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f"train/{key}", value, self.step)
            if self.step % int(self.train_cfg["image_every"]) == 0 or self.step == 1:
                self.writer.add_image("train/gt_pred_error", comparison_grid(renders[0]), self.step)


def run_training(
    config: Mapping[str, Any], index: str | Path, out_dir: str | Path, *, progress: bool = True
) -> Path:
    """Train (resuming if this run has a checkpoint) and return the final model path."""
    trainer = Trainer(config, index, out_dir, progress=progress)
    try:
        return trainer.run()
    finally:
        shutdown(trainer.context)

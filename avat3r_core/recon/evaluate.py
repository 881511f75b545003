"""Held-out evaluation as the paper measures it: a fixed protocol, the paper's metrics, per split and subject.

Every item of the protocol (:mod:`.protocol`: one test avatar's input views and one target frame with its
supervision cameras) is rendered by the model and by the trivial baselines (the per-camera mean image of the
training subjects, and the input views re-projected through their position maps, :mod:`.baselines`) into
the same cameras at the supervision crop size (667 px in the paper's config, 167 px in the demo's) and scored
with the same functions:

* PSNR and SSIM (:mod:`avat3r_core.metrics.image`, torchmetrics conventions) and LPIPS (AlexNet v0.1,
  :mod:`avat3r_core.metrics.lpips`, from local weight files) per view;
* JOD (:func:`avat3r_core.metrics.video.jod`, ColorVideoVDP by default, FovVideoVDP on request) per avatar
  over its target frames seen by one camera (the protocol's ``video_camera``), as a clip at the capture's
  frame rate;
* AKD and CSIM through :mod:`avat3r_core.metrics.face` when its weight files are configured.

Results are reported for the reconstruction items (target expression among the inputs'), the animation
items (novel expression) and both together ("all"), per method, per subject and as the mean over every
scored view (JOD: over clips). A metric that cannot be computed is ``null`` with a reason, never 0.

The input position maps are the shards' stored maps (``stored``: each input's map from its training-time
partner views) or, with ``joint``, DUSt3R run jointly on the avatar's actual inputs with their known cameras
(:func:`avat3r_core.positions.dust3r.positions_for_views`); the mode is written into the results.

Outputs in ``out_dir``: ``metrics.json``, ``metrics.csv`` (the same numbers), ``grid.png`` (one
reconstruction and one animation item: inputs, model prediction, ground truth, error heat map, then the
baselines) and ``summary.html`` (the tables and the grid, self-contained).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from avat3r_core.errors import Avat3rError, ConfigError
from avat3r_core.metrics.image import psnr, ssim
from avat3r_core.metrics.video import jod
from avat3r_core.recon.baselines import camera_mean_images, nearest_input_view, view_splats
from avat3r_core.recon.checkpoint import load_checkpoint, load_model_weights
from avat3r_core.recon.compat import DataSignature, check_model_fits_data, index_signature, load_index
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.model import Avat3rModel, ModelConfig
from avat3r_core.recon.predict import render_supervision, to_device, to_uint8
from avat3r_core.recon.protocol import (
    ProtocolDataset,
    build_protocol,
    load_protocol,
    protocol_digest,
    validate_protocol,
    write_protocol,
)
from avat3r_core.render import render
from avat3r_core.store.atomic import atomic_path, write_json_atomic

log = logging.getLogger("avat3r.evaluate")

METHODS = ("model", "all_views", "nearest_view", "mean_image")
METRICS = ("psnr", "ssim", "lpips", "jod", "akd", "csim")
SPLITS = ("reconstruction", "animation", "all")
POSITION_MODES = ("stored", "joint")
RESULTS_FORMAT = 2
ERROR_SCALE = 0.25  # |pred - target| (mean over RGB) mapped to the full heat-map range
NOT_CONFIGURED = "unavailable: not configured"
HTML_GRID_WIDTH = 1600  # the grid embedded in summary.html is downscaled to at most this width

# evaluate.metrics defaults (the schema fills the same values).
METRIC_DEFAULTS: dict[str, Any] = {
    "lpips_alexnet": None,
    "lpips_heads": None,
    "jod": "cvvdp",
    "jod_display": "standard_4k",
    "fps": 7.5,
    "akd_weights": None,
    "csim_weights": None,
}


class EvaluationError(Avat3rError):
    """Inputs the scoring cannot compare (e.g. renders and targets of different sizes)."""


def load_trained_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[Avat3rModel, dict]:
    """A model.pt (or checkpoint) as an eval-mode model on ``device``, with its saved config."""
    state = load_checkpoint(path)
    config = state["config"]
    model = Avat3rModel(ModelConfig.from_dict(config["model"]))
    load_model_weights(model, state, path, config["model"])
    return model.to(device).eval(), config


# -- per-view scores ------------------------------------------------------------------------------------


def score_views(
    pred: torch.Tensor, target: torch.Tensor, lpips: torch.nn.Module | None = None
) -> dict[str, list[float]]:
    """PSNR, SSIM (and LPIPS when given) of each (3, H, W) view of ``pred`` against ``target``.

    Renders and targets must have the same shape: a render at another size than the supervision crops
    (e.g. a model evaluated at the wrong resolution) is refused, never resampled.
    """
    if pred.ndim != 4 or pred.shape != target.shape:
        raise EvaluationError(
            f"renders {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape: renders must be "
            "made at the supervision crop size, (views, 3, H, W) like the targets"
        )
    pred, target = pred.float().clamp(0, 1), target.float()
    scores = {"psnr": psnr(pred, target).tolist(), "ssim": ssim(pred, target).tolist()}
    if lpips is not None:
        scores["lpips"] = lpips(pred, target).tolist()
    return scores


# -- optional metrics: what is available, and why not ----------------------------------------------------


def _lpips_module(metrics: Mapping[str, Any], train_loss: Mapping[str, Any]) -> tuple[Any, str | None]:
    """LPIPS from evaluate.metrics.lpips_* (else the train loss's paths), or None and the reason."""
    alexnet = metrics.get("lpips_alexnet") or train_loss.get("lpips_alexnet")
    heads = metrics.get("lpips_heads") or train_loss.get("lpips_heads")
    if not alexnet:
        return None, (
            f"{NOT_CONFIGURED} (evaluate.metrics.lpips_alexnet or train.loss.lpips_alexnet: torchvision's "
            "alexnet-owt-7be5be79.pth)"
        )
    from avat3r_core.metrics.lpips import LPIPS

    return LPIPS.from_files(alexnet, heads), None  # a configured but wrong file is an error, not a gap


FaceScorer = Callable[[torch.Tensor, torch.Tensor], dict[str, list[float | None]]]


def _face_scorer(metrics: Mapping[str, Any]) -> tuple[FaceScorer | None, dict[str, str]]:
    """AKD/CSIM per view through :mod:`avat3r_core.metrics.face` when their weight files are configured.

    Returns the scorer (None when neither metric can run) and, per unavailable metric, the reason. A
    configured file of the wrong network raises the face module's FaceModelError.
    """
    wanted = {"akd": metrics.get("akd_weights"), "csim": metrics.get("csim_weights")}
    reasons = {
        name: f"{NOT_CONFIGURED} (evaluate.metrics.{name}_weights)"
        for name, path in wanted.items()
        if not path
    }
    if len(reasons) == len(wanted):
        return None, reasons
    from avat3r_core.metrics import face

    landmarks = face.load_landmark_model(wanted["akd"]) if wanted["akd"] else None
    identity = None
    if wanted["csim"]:
        try:
            identity = face.load_identity_model(wanted["csim"])
        except ImportError as error:  # onnxruntime missing: a gap with its reason, not an error
            reasons["csim"] = f"unavailable: {error}"
    if len(reasons) == len(wanted):
        return None, reasons

    def scorer(pred: torch.Tensor, target: torch.Tensor) -> dict[str, list[float | None]]:
        results = face.face_metrics(
            pred.float().clamp(0, 1), target.float(), landmark_model=landmarks, identity_model=identity
        )
        return {
            name: list(result.per_image) if result.available else [None] * pred.shape[0]
            for name, result in results.items()
            if name not in reasons
        }

    return scorer, reasons


# -- input position maps ----------------------------------------------------------------------------------


class JointPositions:
    """DUSt3R on an avatar's actual input views with their known cameras (cached per avatar)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        dust3r = dict(cfg.get("dust3r") or {})
        if not dust3r.get("checkpoint"):
            raise ConfigError(
                "positions.dust3r.checkpoint",
                "evaluate.positions joint runs DUSt3R on the test inputs and needs a checkpoint "
                "(or evaluate.positions: stored)",
            )
        from avat3r_core.models.dust3r.checkpoint import load_dust3r

        self.cfg = dust3r
        self.device = dust3r.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_dust3r(dust3r["checkpoint"], device=self.device)
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, avatar: str, sample: dict[str, Any]) -> None:
        if avatar not in self.cache:
            from avat3r_core.geometry.cameras import Camera
            from avat3r_core.positions.dust3r import positions_for_views

            views = sample["input_rgb"].shape[0]
            if views < 2:
                raise EvaluationError(
                    f"joint DUSt3R positions need at least 2 input views, the model reads {views}"
                )
            size = sample["input_rgb"].shape[-1]
            cameras = [
                Camera(K=k.double().numpy(), w2c=m.double().numpy(), width=size, height=size)
                for k, m in zip(sample["input_K"], sample["input_w2c"], strict=True)
            ]
            with torch.enable_grad():  # the global alignment optimises (evaluation runs under no_grad)
                points, conf = positions_for_views(
                    self.model, list(to_uint8(sample["input_rgb"])), cameras, self.cfg, self.device
                )
            self.cache[avatar] = (
                torch.from_numpy(points).permute(0, 3, 1, 2).contiguous(),
                torch.from_numpy(conf)[:, None],
            )
        sample["position"], sample["confidence"] = self.cache[avatar]


# -- the evaluation ---------------------------------------------------------------------------------------


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _heat(error: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) absolute error -> a black-red-yellow-white heat map, full scale at ERROR_SCALE."""
    x = (error.mean(dim=1, keepdim=True) / ERROR_SCALE).clamp(0, 1)
    return torch.cat([(3 * x).clamp(0, 1), (3 * x - 1).clamp(0, 1), (3 * x - 2).clamp(0, 1)], dim=1)


def _panel(rows: list[torch.Tensor], columns: int) -> torch.Tensor:
    """Rows of (n, 3, H, W) images -> one (3, rows*H, columns*W) picture, short rows padded with black."""
    lines = []
    for row in rows:
        row = row[:columns].detach().float().clamp(0, 1).cpu()
        if row.shape[0] < columns:
            row = torch.cat([row, row.new_zeros(columns - row.shape[0], *row.shape[1:])])
        lines.append(torch.cat(list(row), dim=-1))
    return torch.cat(lines, dim=-2)


@torch.no_grad()
def evaluate_heldout(
    model_path: str | Path,
    index: str | Path,
    out_dir: str | Path,
    *,
    protocol: str | Path | Mapping[str, Any] | None = None,
    split: str = "test",
    seed: int = 0,
    positions: str = "stored",
    positions_cfg: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    renderer: str = "auto",
    device: str | None = None,
    max_items: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the model and the baselines on a protocol; write metrics.json/.csv, grid.png, summary.html.

    ``protocol``: a protocol file (checked against ``index``) or a loaded one; None builds one from the index
    (``split``, ``seed``, default settings) and writes it to ``out_dir/protocol.json``.
    """
    if positions not in POSITION_MODES:
        raise ConfigError("evaluate.positions", f"expected one of {POSITION_MODES}, got {positions!r}")
    metrics = dict(METRIC_DEFAULTS, **(metrics or {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if protocol is None:
        protocol = build_protocol(index, dataset="unnamed", seed=seed, split=split)
        protocol_path: str | None = str(write_protocol(protocol, out_dir / "protocol.json"))
    elif isinstance(protocol, str | Path):
        protocol_path = str(protocol)
        protocol = load_protocol(protocol, index)
    else:
        validate_protocol(protocol, index)
        protocol_path = None
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, config = load_trained_model(model_path, device)
    train_cfg: Mapping[str, Any] = config["train"]
    threshold = float(config["model"]["confidence_threshold"])
    background = torch.tensor(train_cfg["background"], dtype=torch.float32, device=device)
    n_views = int(train_cfg["n_views"])
    dataset = ProtocolDataset(index, protocol, n_views)
    items = dataset.items if max_items is None else dataset.items[:max_items]
    index_data = load_index(index)
    scored = index_signature(index_data, subjects={avatar["subject"] for avatar in protocol["avatars"]})
    compatibility = check_model_fits_data(config.get("data"), scored)
    for note in compatibility:
        log.warning("%s", note)
    trained_on = (config.get("data") or {}).get("dataset")
    has_train = any(entry.get("split") == "train" for entry in index_data["subjects"].values())
    mean_split = "train" if has_train else protocol.get("split", split)
    if mean_split != "train":
        log.warning(
            "mean-image baseline: the index has no training subjects (an evaluation-only capture), so it "
            "averages the %s subjects, the scored ones included: an optimistic baseline",
            mean_split,
        )
    means = camera_mean_images(Avat3rShardDataset(index, split=mean_split, n_views=1, n_candidates=1))

    lpips, lpips_reason = _lpips_module(metrics, train_cfg.get("loss", {}))
    if lpips is not None:
        lpips = lpips.to(device)
    face, face_reasons = _face_scorer(metrics)
    joint = JointPositions(positions_cfg or {}) if positions == "joint" else None
    videos = {avatar["id"]: avatar.get("video_camera") for avatar in protocol["avatars"]}

    records: list[dict[str, Any]] = []  # one per (item, view, method)
    clips: dict[tuple[str, str, str], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    panels: dict[str, torch.Tensor] = {}
    size = None
    for i in tqdm(range(len(items)), desc="evaluate", disable=not progress):
        item = items[i]
        sample = dataset[i]
        if joint is not None:
            joint(item["avatar"], sample)
        batch = to_device(
            {k: v[None] if isinstance(v, torch.Tensor) else [v] for k, v in sample.items()}, device
        )
        predictions = _predict(model, batch, dataset, means, background, renderer, threshold)
        target = predictions.pop("target")
        size = list(target.shape[-2:])
        for method, pred in predictions.items():
            scores = score_views(pred, target, lpips)
            if face is not None:
                scores.update(face(pred, target))
            for v, camera in enumerate(item["cameras"]):
                records.append(
                    {
                        "split": item["split"],
                        "subject": item["subject"],
                        "method": method,
                        "camera": camera,
                        "frame": item["frame"],
                        **{metric: values[v] for metric, values in scores.items()},
                    }
                )
            camera = videos.get(item["avatar"])
            if camera in item["cameras"]:
                v = item["cameras"].index(camera)
                view = (item["frame"], pred[v].float().clamp(0, 1).cpu(), target[v].float().cpu())
                for split in (item["split"], "all"):
                    clips.setdefault((split, method, item["avatar"]), []).append(view)
        if item["split"] not in panels:
            inputs = F.interpolate(sample["input_rgb"], size=size, mode="bilinear", antialias=True)
            rows = [inputs, predictions["model"], target, _heat((predictions["model"] - target).abs())]
            rows += [predictions[m] for m in METHODS if m != "model"]
            panels[item["split"]] = _panel(rows, max(min(4, target.shape[0]), inputs.shape[0]))

    reasons: dict[str, str | None] = {"psnr": None, "ssim": None, "lpips": lpips_reason, **face_reasons}
    jod_info, jod_values = _jod_scores(clips, metrics, protocol)
    reasons["jod"] = jod_info.get("reason")
    results = _aggregate(records, jod_values, reasons, protocol)
    summary = {
        "format": RESULTS_FORMAT,
        "model": str(model_path),
        "protocol": {
            "path": protocol_path,
            "version": protocol["version"],
            "dataset": protocol["dataset"],
            "seed": protocol["seed"],
            "sha256": protocol_digest(protocol),
        },
        "split": protocol.get("split"),
        # what the model trained on and what it is scored on (recon/compat.py): another dataset is the
        # paper's out-of-domain protocol (a model trained on Ava-256, scored on NeRSemble)
        "trained_on": config.get("data"),
        "scored_on": scored.as_dict(),
        "cross_dataset": trained_on is not None and trained_on != scored.dataset,
        "compatibility_notes": compatibility,
        "mean_image_from": f"{mean_split} split"
        + ("" if mean_split == "train" else " (scored subjects included)"),
        "positions": positions,
        "size": size,
        "n_views": n_views,
        "items": len(items),
        "views_scored": sum(1 for r in records if r["method"] == "model"),
        "metrics": {
            "psnr": {"available": True, "convention": "torchmetrics PeakSignalNoiseRatio(data_range=1.0)"},
            "ssim": {
                "available": True,
                "convention": "torchmetrics StructuralSimilarityIndexMeasure(data_range=1.0)",
            },
            "lpips": {"available": lpips is not None, "reason": lpips_reason, "net": "alex v0.1"},
            "jod": jod_info,
            "akd": {"available": "akd" not in face_reasons, "reason": face_reasons.get("akd")},
            "csim": {"available": "csim" not in face_reasons, "reason": face_reasons.get("csim")},
        },
        "results": results,
        # The "all" split in the shape of format 1, for readers of earlier metrics.json files.
        "methods": {m: results["all"][m]["mean"] for m in METHODS},
        "subjects": {
            subject: {
                f"{m}/{metric}": results["all"][m]["subjects"][subject]["mean"][metric]
                for m in METHODS
                for metric in METRICS
            }
            for subject in results["all"]["model"]["subjects"]
        },
        "grid_rows": [
            "inputs (resized)",
            "model",
            "ground truth",
            f"|model - ground truth|, full scale {ERROR_SCALE}",
            "all input views re-projected",
            "nearest input view",
            "mean image",
        ],
        "grid_columns": [f"{split} item" for split in SPLITS if split in panels],
    }
    baselines = {m: summary["methods"][m]["psnr"] for m in METHODS if m != "model"}
    best = max(baselines, key=lambda m: baselines[m] if baselines[m] is not None else -np.inf)
    summary["best_baseline"] = best
    model_psnr = summary["methods"]["model"]["psnr"]
    summary["psnr_gain_over_best_baseline"] = (
        model_psnr - baselines[best] if model_psnr is not None and baselines[best] is not None else None
    )

    grid = None
    if panels:
        gap = torch.ones(3, next(iter(panels.values())).shape[1], 4)
        parts = [p for split in SPLITS if (p := panels.get(split)) is not None]
        joined = [parts[0]] + [t for p in parts[1:] for t in (gap, p)]
        grid = to_uint8(torch.cat(joined, dim=-1)[None])[0]
        with atomic_path(out_dir / "grid.png") as temporary:
            Image.fromarray(grid).save(temporary, format="PNG")
    write_json_atomic(out_dir / "metrics.json", summary)
    write_metrics_csv(summary, out_dir / "metrics.csv")
    write_summary_html(summary, grid, out_dir / "summary.html")
    log.info(
        "PSNR model %s dB (reconstruction %s, animation %s), best baseline %s; %d views, positions %s",
        _fmt(model_psnr),
        _fmt(results["reconstruction"]["model"]["mean"]["psnr"]),
        _fmt(results["animation"]["model"]["mean"]["psnr"]),
        best,
        summary["views_scored"],
        positions,
    )
    return summary


def _predict(
    model: Avat3rModel,
    batch: dict[str, Any],
    dataset: ProtocolDataset,
    means: Mapping[str, np.ndarray],
    background: torch.Tensor,
    renderer: str,
    threshold: float,
) -> dict[str, torch.Tensor]:
    """The model's and the baselines' renders of one item's target cameras, and the targets."""
    out = render_supervision(model(batch), batch, 0, background=background, backend=renderer)
    valid = torch.nonzero(batch["target_valid"][0]).flatten().tolist()
    K, w2c = batch["target_K"][0][valid], batch["target_w2c"][0][valid]
    height, width = out.target.shape[-2:]
    scene = view_splats(batch, 0, list(range(batch["input_rgb"].shape[1])), confidence_threshold=threshold)
    all_views = render(scene, K, w2c, width, height, background, renderer).rgb
    nearest = torch.empty_like(all_views)
    closest = [nearest_input_view(batch, 0, j) for j in valid]
    for view in sorted(set(closest)):  # one render per input view, into the targets it is closest to
        rows = [n for n, c in enumerate(closest) if c == view]
        scene = view_splats(batch, 0, [view], confidence_threshold=threshold)
        nearest[rows] = render(scene, K[rows], w2c[rows], width, height, background, renderer).rgb
    cameras = dataset.camera_ids(batch["subject"][0], "supervision")
    mean = torch.stack(
        [
            torch.from_numpy(means.get(cameras[int(batch["target_camera_index"][0][j])], means["*"]))
            for j in valid
        ]
    )
    mean = mean.permute(0, 3, 1, 2).to(out.target.device)
    return {
        "model": out.pred,
        "all_views": all_views,
        "nearest_view": nearest,
        "mean_image": mean,
        "target": out.target,
    }


def _jod_scores(
    clips: Mapping[tuple[str, str, str], list[tuple[int, torch.Tensor, torch.Tensor]]],
    metrics: Mapping[str, Any],
    protocol: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[tuple[str, str, str], float]]:
    """JOD per (split, method, avatar) clip, and what produced it (or why there is none)."""
    metric = metrics.get("jod")
    info: dict[str, Any] = {
        "metric": metric,
        "display": metrics["jod_display"],
        "fps": float(metrics["fps"]),
        "clip": "per avatar: its target frames of the split seen by the protocol's video_camera, in order",
    }
    if not metric:
        return dict(info, available=False, reason=f"{NOT_CONFIGURED} (evaluate.metrics.jod is null)"), {}
    values: dict[tuple[str, str, str], float] = {}
    for key, views in sorted(clips.items()):
        views = sorted(views, key=lambda view: view[0])
        pred = torch.stack([view[1] for view in views])
        target = torch.stack([view[2] for view in views])
        result = jod(pred, target, fps=info["fps"], metric=metric, display=info["display"])
        if not result.available:
            return dict(info, available=False, reason=result.reason), {}
        values[key] = float(result.value)
    return dict(info, available=True, reason=None), values


def _aggregate(
    records: list[dict[str, Any]],
    jod_values: Mapping[tuple[str, str, str], float],
    reasons: Mapping[str, str | None],
    protocol: Mapping[str, Any],
) -> dict[str, Any]:
    """split -> method -> {"mean": {metric: value}, "views": n, "subjects": {subject: {...}}}."""
    subject_of = {avatar["id"]: avatar["subject"] for avatar in protocol["avatars"]}
    results: dict[str, Any] = {}
    for split in SPLITS:
        results[split] = {}
        for method in METHODS:
            rows = [r for r in records if r["method"] == method and split in (r["split"], "all")]
            clips = {a: v for (s, m, a), v in jod_values.items() if s == split and m == method}

            def summarise(selected: list[dict[str, Any]], clip_values: list[float]) -> dict[str, Any]:
                mean: dict[str, float | None] = {}
                for metric in METRICS:
                    if metric == "jod":
                        mean[metric] = _mean(clip_values) if reasons.get("jod") is None else None
                    elif reasons.get(metric) is not None:
                        mean[metric] = None
                    else:
                        mean[metric] = _mean([r.get(metric) for r in selected])
                return {"mean": mean, "views": len(selected), "clips": len(clip_values)}

            entry = summarise(rows, list(clips.values()))
            entry["subjects"] = {}
            for subject in sorted({r["subject"] for r in rows}):
                own = [r for r in rows if r["subject"] == subject]
                own_clips = [v for a, v in clips.items() if subject_of[a] == subject]
                entry["subjects"][subject] = summarise(own, own_clips)
            results[split][method] = entry
    return results


# -- the table, the grid and the page ---------------------------------------------------------------------

CSV_COLUMNS = ("split", "method", "subject", "views", *METRICS)


def metrics_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics table: one row per (split, method, subject or 'mean'); unavailable values are None."""
    rows = []
    for split, methods in summary["results"].items():
        for method, entry in methods.items():
            for subject, values in [("mean", entry), *entry["subjects"].items()]:
                rows.append(
                    {
                        "split": split,
                        "method": method,
                        "subject": subject,
                        "views": values["views"],
                        **values["mean"],
                    }
                )
    return rows


def write_metrics_csv(summary: Mapping[str, Any], path: str | Path) -> None:
    """metrics.csv: the rows of :func:`metrics_rows`; an unavailable value is an empty cell (null in JSON)."""
    with atomic_path(Path(path)) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in metrics_rows(summary):
            writer.writerow(
                {
                    k: "" if row[k] is None else (repr(row[k]) if isinstance(row[k], float) else row[k])
                    for k in CSV_COLUMNS
                }
            )


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "jod": 2, "akd": 2, "csim": 3}


def write_summary_html(summary: Mapping[str, Any], grid: np.ndarray | None, path: str | Path) -> None:
    """A self-contained page: the mean table per split, what each metric is, and the grid as a data URI."""
    info = summary["metrics"]
    jod = info["jod"]
    names = {
        "psnr": "PSNR ↑",
        "ssim": "SSIM ↑",
        "lpips": "LPIPS ↓",
        "jod": f"JOD ↑ ({jod['metric'] or 'off'})",
        "akd": "AKD ↓",
        "csim": "CSIM ↑",
    }
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>avat3r evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #aaa;padding:.25em .6em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>Evaluation of {html.escape(str(summary['model']))}</h1>",
        "<p>Protocol: dataset {}, version {}, seed {}, {} items, {} views scored at {} px; input positions: "
        "<b>{}</b>; {} input views.</p>".format(
            *(
                html.escape(str(x))
                for x in (
                    summary["protocol"]["dataset"],
                    summary["protocol"]["version"],
                    summary["protocol"]["seed"],
                    summary["items"],
                    summary["views_scored"],
                    "x".join(map(str, summary["size"] or [])),
                    summary["positions"],
                    summary["n_views"],
                )
            )
        ),
    ]
    trained, scored = summary.get("trained_on"), summary.get("scored_on")
    if scored:
        trained_text = DataSignature.from_dict(trained).describe() if trained else "unrecorded"
        parts.append(
            "<p>{}Model trained on {}; scored on {}. Mean image from the {}.</p>".format(
                "<b>Cross-dataset.</b> " if summary.get("cross_dataset") else "",
                html.escape(trained_text),
                html.escape(DataSignature.from_dict(scored).describe()),
                html.escape(str(summary.get("mean_image_from"))),
            )
        )
    for split, methods in summary["results"].items():
        parts.append(f"<h2>{html.escape(split)}</h2><table><tr><th>method</th><th>views</th>")
        parts += [f"<th>{html.escape(names[m])}</th>" for m in METRICS]
        parts.append("</tr>")
        for method, entry in methods.items():
            cells = [f"<td>{html.escape(method)}</td><td>{entry['views']}</td>"]
            for metric in METRICS:
                value = entry["mean"][metric]
                reason = info[metric].get("reason") or ""
                cells.append(f"<td title='{html.escape(reason)}'>{_fmt(value, DIGITS[metric])}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    notes = [f"{m}: {info[m]['reason']}" for m in METRICS if info[m].get("reason")]
    if jod.get("available"):
        notes.append(f"JOD: {jod['metric']}, display {jod['display']}, {jod['fps']} fps; {jod['clip']}")
    parts.append("<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>")
    if grid is not None:
        buffer = io.BytesIO()
        picture = Image.fromarray(grid)
        if picture.width > HTML_GRID_WIDTH:  # keep the page small at 667 px renders; grid.png is full size
            height = round(picture.height * HTML_GRID_WIDTH / picture.width)
            picture = picture.resize((HTML_GRID_WIDTH, height), Image.Resampling.BOX)
        picture.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode()
        rows = ", ".join(summary["grid_rows"])
        parts.append(
            f"<h2>Comparison grid</h2><p>Rows: {html.escape(rows)}. Panels: "
            f"{html.escape(', '.join(summary['grid_columns']))}.</p>"
        )
        parts.append(f"<img alt='comparison grid' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    with atomic_path(Path(path)) as temporary:
        Path(temporary).write_text("\n".join(parts))

"""The `avat3r` command line: one subcommand per DAG stage.

Every Snakemake rule calls one of these, so each stage can also be run, debugged and profiled by hand.
Rules pass the config sections a stage depends on as inline JSON (`--config '{"capture": {...}}'`), which
keeps Snakemake's params-based rerun detection exact; by hand, `--config config.yaml` works as well.
Errors the pipeline raises on purpose print as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from avat3r_core import __version__
from avat3r_core.config import load_config, validate_sections
from avat3r_core.errors import Avat3rError

log = logging.getLogger("avat3r")


def _config(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(_parse_override(item) for item in args.set)
    text = args.config.strip()
    if text.startswith("{"):
        try:
            sections = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"avat3r: --config is neither a file nor valid JSON: {exc}") from None
        return validate_sections(sections, overrides)
    return load_config(Path(text), overrides)


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"avat3r: --set expects KEY=VALUE, got {item!r}")
    return key, yaml.safe_load(value)


# -- subcommands ----------------------------------------------------------------------------------------
def cmd_synthetic(args: argparse.Namespace) -> None:
    from avat3r_core.capture import synthetic_config
    from avat3r_core.capture.synthetic import generate_synthetic_capture

    config = _config(args)
    section = config["synthetic"]
    root = Path(args.out or config["capture"]["root"])
    groundtruth = Path(args.groundtruth or section["groundtruth"])
    layout = args.layout or section.get("layout", "ava256")
    tracking = bool(args.with_tracking or section.get("tracking", False))
    if layout == "nersemble":
        from avat3r_core.capture.synthetic.nersemble_writer import generate_synthetic_nersemble

        generate_synthetic_nersemble(
            root, groundtruth, synthetic_config(section), tracking=tracking, progress=not args.quiet
        )
    else:
        generate_synthetic_capture(
            root,
            groundtruth,
            synthetic_config(section),
            workers=args.workers,
            progress=not args.quiet,
            tracking=tracking,
        )
    log.info("synthetic %s-layout capture written to %s (ground truth in %s)", layout, root, groundtruth)


def cmd_capture_index(args: argparse.Namespace) -> None:
    from avat3r_core.capture import open_capture
    from avat3r_core.stages.capture_index import write_capture_index

    config = _config(args)
    write_capture_index(open_capture(config["capture"], args.subject), args.out, progress=not args.quiet)


def cmd_frames(args: argparse.Namespace) -> None:
    from avat3r_core.stages.frames import write_frames

    config = _config(args)
    index = json.loads(Path(args.index).read_text())
    write_frames(index, config["frames"], config["seed"], args.out)


def cmd_views(args: argparse.Namespace) -> None:
    from avat3r_core.stages.index import CaptureIndex
    from avat3r_core.stages.views import write_views

    config = _config(args)
    frames = json.loads(Path(args.frames).read_text())
    write_views(CaptureIndex.load(args.index), frames, config["views"], config["seed"], args.out)


def cmd_matting(args: argparse.Namespace) -> None:
    from avat3r_core.capture import open_capture
    from avat3r_core.stages.index import CaptureIndex
    from avat3r_core.stages.matting import run_matting

    config = _config(args)
    index = CaptureIndex.load(args.index)
    run_matting(
        open_capture(config["capture"], index.subject),
        index,
        json.loads(Path(args.frames).read_text()),
        json.loads(Path(args.views).read_text()),
        config["matting"],
        args.out,
        groundtruth=args.groundtruth,
        progress=not args.quiet,
    )


def cmd_crop(args: argparse.Namespace) -> None:
    from avat3r_core.capture import open_capture
    from avat3r_core.stages.crop import run_crop
    from avat3r_core.stages.index import CaptureIndex

    config = _config(args)
    index = CaptureIndex.load(args.index)
    run_crop(
        open_capture(config["capture"], index.subject),
        index,
        json.loads(Path(args.frames).read_text()),
        json.loads(Path(args.views).read_text()),
        args.matting,
        config["crop"],
        config["matting"]["composite"],
        args.out,
        progress=not args.quiet,
    )


def cmd_positions(args: argparse.Namespace) -> None:
    from avat3r_core.capture import open_capture
    from avat3r_core.stages.positions import run_positions

    config = _config(args)
    views = json.loads(Path(args.views).read_text())
    reader = open_capture(config["capture"], views["subject"])
    run_positions(
        reader,
        args.crops,
        views,
        config["positions"],
        args.out,
        groundtruth=args.groundtruth,
        progress=not args.quiet,
    )


def cmd_features(args: argparse.Namespace) -> None:
    from avat3r_core.stages.features import run_features

    config = _config(args)
    run_features(
        args.crops,
        config["features"],
        config["seed"],
        args.out,
        subject=args.subject,
        progress=not args.quiet,
    )


def cmd_shards(args: argparse.Namespace) -> None:
    from avat3r_core.capture import open_capture
    from avat3r_core.stages.shards import run_shards

    config = _config(args)
    stores = {"crops": args.crops, "positions": args.positions, "features": args.features}
    frames = json.loads(Path(args.frames).read_text())
    run_shards(open_capture(config["capture"], frames["subject"]), frames, stores, config["shards"], args.out)


def cmd_dataset_index(args: argparse.Namespace) -> None:
    from avat3r_core.config import is_evaluation_only
    from avat3r_core.stages.shards import write_dataset_index

    config = _config(args)
    shards = {Path(path).parent.name: Path(path) for path in args.shards}
    write_dataset_index(
        shards,
        config["shards"],
        args.out,
        dataset=args.dataset,
        evaluation_only=is_evaluation_only(config["capture"]),
    )


def cmd_train(args: argparse.Namespace) -> None:
    from avat3r_core.recon.train import run_training

    config = _config(args)
    final = run_training(config, args.index, args.out, progress=not args.quiet)
    log.info("trained model written to %s", final)


def cmd_protocol(args: argparse.Namespace) -> None:
    from avat3r_core.recon.protocol import build_protocol, load_protocol, write_protocol

    config = _config(args)
    evaluate = config["evaluate"]
    settings = {k: v for k, v in evaluate["protocol"].items() if k not in ("file", "dataset")}
    if evaluate["protocol"]["file"]:  # a fixed protocol: checked against this index, then copied
        protocol = load_protocol(evaluate["protocol"]["file"], args.index)
    else:
        protocol = build_protocol(
            args.index,
            dataset=args.dataset,
            seed=evaluate["seed"],
            split=evaluate["split"],
            settings=settings,
        )
    write_protocol(protocol, args.out)
    targets = [t for a in protocol["avatars"] for t in a["targets"]]
    log.info(
        "protocol %s (dataset %s, seed %d): %d avatars of %d subjects, %d reconstruction and %d animation "
        "targets",
        args.out,
        protocol["dataset"],
        protocol["seed"],
        len(protocol["avatars"]),
        len(protocol["subjects"])
        if "subjects" in protocol
        else len({a["subject"] for a in protocol["avatars"]}),
        sum(t["split"] == "reconstruction" for t in targets),
        sum(t["split"] == "animation" for t in targets),
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from avat3r_core.recon.evaluate import evaluate_heldout

    config = _config(args)
    evaluate = config["evaluate"]
    evaluate_heldout(
        args.model,
        args.index,
        args.out,
        protocol=args.protocol,
        split=evaluate["split"],
        seed=evaluate["seed"],
        positions=evaluate["positions"],
        positions_cfg=config.get("positions"),
        metrics=dict(
            evaluate["metrics"],
            lpips_alexnet=evaluate["metrics"]["lpips_alexnet"] or config["train"]["loss"]["lpips_alexnet"],
            lpips_heads=evaluate["metrics"]["lpips_heads"] or config["train"]["loss"]["lpips_heads"],
        ),
        max_items=evaluate["max_items"],
        renderer=config["train"]["renderer"],
        device=config["train"]["device"],
        progress=not args.quiet,
    )


def cmd_gather(args: argparse.Namespace) -> None:
    from avat3r_core.recon.gather import gather

    gather(args.metrics, args.out)


def cmd_animate(args: argparse.Namespace) -> None:
    from avat3r_core.recon.animate import animate

    config = _config(args)
    if (args.index is None) == (args.avatar is None):
        raise SystemExit(
            "avat3r animate: give exactly one of --index (dataset subject) or --avatar (avat3r create)"
        )
    summary = animate(
        args.model,
        args.index,
        args.out,
        avatar=args.avatar,
        subject=args.subject,
        expressions=args.expressions,
        camera=args.camera,
        fps=args.fps,
        seed=args.seed,
        batch=args.batch,
        renderer=config["train"]["renderer"],
        device=config["train"]["device"],
    )
    log.info(
        "%d frames of subject %s (%s, inputs %s) written to %s and %s; encode %.2f s, driving %.1f fps on %s",
        summary["frames"],
        summary["subject"],
        summary["camera"],
        ", ".join(summary["inputs"]),
        summary["video"],
        summary["contact_sheet"],
        summary["encode_s"],
        summary["drive_fps"],
        summary["device"],
    )


def cmd_create(args: argparse.Namespace) -> None:
    from avat3r_core.create import CreateOptions, create_avatar

    config = _config(args)
    options = CreateOptions(
        dust3r=args.dust3r,
        sapiens=args.sapiens,
        sapiens_model=args.sapiens_model,
        dust3r_resolution=args.dust3r_resolution,
        iterations=args.iterations,
        seed=config.get("seed", 0),
        device=config.get("train", {}).get("device"),
    )
    summary = create_avatar(args.images, args.model, args.out, options)
    random = summary["random_weights"]
    log.info(
        "avatar of %d photo(s) written to %s (focal %s px; %s)%s",
        summary["views"],
        summary["out"],
        ", ".join(f"{f:.0f}" for f in summary["focal_px"]),
        summary["dust3r"],
        f" -- {' and '.join(random)} RANDOM WEIGHTS: a plumbing test, not an avatar" if random else "",
    )


def cmd_validate(args: argparse.Namespace) -> None:
    from avat3r_core.errors import Avat3rError
    from avat3r_core.store.manifest import verify_store

    failed = False
    for path in args.paths:
        bad = verify_store(path)
        print(f"{path}: {'OK' if not bad else 'CORRUPT arrays: ' + ', '.join(bad)}")
        failed |= bool(bad)
    if failed:
        raise Avat3rError("some stores differ from their manifests (see above)")


def cmd_plan(args: argparse.Namespace) -> None:
    from avat3r_core.plan import CaptureSize, capture_size, format_plan, plan

    config = _config(args)
    if args.subjects:
        size = CaptureSize(
            args.subjects, args.cameras, args.frames, args.height, args.width, args.front_facing
        )
        source = "a capture described on the command line"
    else:
        size, source = capture_size(config)
        size = CaptureSize(**{**size.__dict__, "front_facing": args.front_facing})
    print(f"plan for {source}:")
    print(format_plan(plan(config, size), size))


def cmd_report_subject(args: argparse.Namespace) -> None:
    from avat3r_core.report.contact_sheet import crops_contact_sheet
    from avat3r_core.report.dome import camera_dome
    from avat3r_core.report.draw import save_png
    from avat3r_core.report.position_maps import positions_sheet

    config = _config(args)
    save_png(crops_contact_sheet(args.crops, max_views=args.max_views), args.out_crops)
    save_png(positions_sheet(args.positions, max_views=args.max_views), args.out_positions)
    views = json.loads(args.views.read_text())
    head_center = json.loads(args.index.read_text())["head_center"]
    save_png(camera_dome(views, head_center, config["views"]["forward_axis"]), args.out_dome)
    log.info("report figures of subject %s written", views.get("subject", "?"))


def cmd_report_training(args: argparse.Namespace) -> None:
    import shutil

    from avat3r_core.report.draw import save_png
    from avat3r_core.report.training import (
        metrics_table_html,
        read_history,
        training_curves,
        write_text_atomic,
    )
    from avat3r_core.store.atomic import atomic_path

    history = read_history(args.history) if args.history.exists() else []
    if not history:
        log.warning("%s has no logged steps: the curves are empty", args.history)
    metrics = json.loads(args.metrics.read_text())
    title = f"variant {args.variant}: {len(history)} logged steps ({args.history})"
    save_png(training_curves({args.variant: history}, title), args.out_curves)
    table = metrics_table_html({args.variant: metrics}, {args.variant: history}, args.summary)
    write_text_atomic(table, args.out_table)
    if args.grid and args.out_grid:
        args.out_grid.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out_grid) as temporary:
            shutil.copyfile(args.grid, temporary)
    log.info("report figures of variant %s written", args.variant)


def cmd_report_index(args: argparse.Namespace) -> None:
    import hashlib

    from PIL import Image

    from avat3r_core.store.atomic import write_json_atomic

    figures = []
    for path in args.figures:
        entry = {"path": str(path), "bytes": path.stat().st_size}
        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.suffix == ".png":
            with Image.open(path) as image:
                entry["width"], entry["height"] = image.size
        figures.append(entry)
    write_json_atomic(args.out, {"figures": figures})
    log.info("%d report figures listed in %s", len(figures), args.out)


def cmd_subjects(args: argparse.Namespace) -> None:
    from avat3r_core.capture import subject_ids

    print("\n".join(subject_ids(_config(args))))


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default="config.yaml", help="YAML config file, or inline JSON of config sections"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avat3r", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"avat3r {__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=help, description=help)
        _add_common(child)
        child.set_defaults(func=func)
        return child

    p = add(
        "synthetic",
        cmd_synthetic,
        "write a synthetic capture (Ava-256 or NeRSemble v2 layout), with ground truth",
    )
    p.add_argument("--out", help="capture root (default: capture.root)")
    p.add_argument("--groundtruth", help="ground-truth folder (default: synthetic.groundtruth)")
    p.add_argument("--workers", type=int, default=2, help="processes used for rendering (ava256 layout)")
    p.add_argument(
        "--layout", choices=["ava256", "nersemble"], help="on-disk layout (default: synthetic.layout)"
    )
    p.add_argument(
        "--with-tracking",
        action="store_true",
        help="also write FLAME tracking: the benchmark npz (nersemble), GAGAvatar optim.pkl (ava256) "
        "(default: synthetic.tracking)",
    )

    p = add("capture-index", cmd_capture_index, "index one subject: cameras, frames, gaps, head poses")
    p.add_argument("--subject", required=True)
    p.add_argument("--out", required=True, type=Path, help="capture_index.json to write")

    p = add("frames", cmd_frames, "choose input and supervision timesteps from a capture index")
    p.add_argument("--index", required=True, type=Path, help="capture_index.json of the subject")
    p.add_argument("--out", required=True, type=Path, help="frames.json to write")

    p = add("views", cmd_views, "front-facing input cameras, partner views and the sampler's camera pool")
    p.add_argument("--index", required=True, type=Path, help="capture_index.json of the subject")
    p.add_argument("--frames", required=True, type=Path, help="frames.json of the subject")
    p.add_argument("--out", required=True, type=Path, help="views.json to write")

    p = add("matting", cmd_matting, "alpha mattes for the input views and the supervision timesteps")
    p.add_argument("--index", required=True, type=Path, help="capture_index.json of the subject")
    p.add_argument("--frames", required=True, type=Path, help="frames.json of the subject")
    p.add_argument("--views", required=True, type=Path, help="views.json of the subject")
    p.add_argument("--groundtruth", type=Path, help="synthetic ground truth folder: log IoU against it")
    p.add_argument("--out", required=True, type=Path, help="matting.zarr to write")

    p = add("crop", cmd_crop, "head-centric crops of input and supervision views, with K and w2c")
    p.add_argument("--index", required=True, type=Path, help="capture_index.json of the subject")
    p.add_argument("--frames", required=True, type=Path, help="frames.json of the subject")
    p.add_argument("--views", required=True, type=Path, help="views.json of the subject")
    p.add_argument("--matting", required=True, type=Path, help="matting.zarr of the subject")
    p.add_argument("--out", required=True, type=Path, help="crops.zarr to write")

    p = add(
        "positions",
        cmd_positions,
        "position and confidence maps of the input views (mesh, DUSt3R, or synthetic ground truth)",
    )
    p.add_argument("--crops", required=True, type=Path, help="crops.zarr of the subject")
    p.add_argument("--views", required=True, type=Path, help="views.json of the subject")
    p.add_argument(
        "--groundtruth",
        metavar="DIR",
        type=Path,
        help="synthetic ground truth folder, read by positions.backend groundtruth (ORACLE maps)",
    )
    p.add_argument("--out", required=True, type=Path, help="positions.zarr to write")

    p = add("features", cmd_features, "Sapiens features of every input crop")
    p.add_argument("--subject", required=True)
    p.add_argument("--crops", required=True, type=Path, help="crops.zarr of the subject")
    p.add_argument("--out", required=True, type=Path, help="features.zarr to write")

    p = add("shards", cmd_shards, "verify a subject's stores as one training shard, with expression codes")
    p.add_argument("--frames", required=True, type=Path, help="frames.json of the subject")
    p.add_argument("--crops", required=True, type=Path)
    p.add_argument("--positions", required=True, type=Path)
    p.add_argument("--features", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="shard.zarr to write")

    p = add(
        "dataset-index", cmd_dataset_index, "index every subject's shard with its train/validation/test split"
    )
    p.add_argument(
        "--shards", required=True, nargs="+", help="{results}/{subject}/shard.zarr of every subject"
    )
    p.add_argument("--dataset", default="unknown", help="the dataset's name, recorded in the index")
    p.add_argument("--out", required=True, type=Path, help="dataset_index.json to write")

    p = add("train", cmd_train, "train the reconstruction model from the shards (torchrun for many GPUs)")
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json (its train split is used)")
    p.add_argument("--out", required=True, type=Path, help="run folder: model.pt, checkpoints/, tensorboard/")

    p = add(
        "protocol",
        cmd_protocol,
        "the evaluation protocol: held-out avatars, their input views and reconstruction/animation targets",
    )
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json")
    p.add_argument("--dataset", default="unnamed", help="dataset name written into the protocol")
    p.add_argument("--out", required=True, type=Path, help="protocol.json to write")

    p = add("evaluate", cmd_evaluate, "score a trained model and the trivial baselines on held-out subjects")
    p.add_argument("--model", required=True, type=Path, help="model.pt written by avat3r train")
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json")
    p.add_argument(
        "--protocol", type=Path, help="protocol.json (avat3r protocol); default: build one into --out"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="folder for metrics.json/.csv, grid.png and summary.html"
    )

    p = add("gather", cmd_gather, "every variant's metrics.json in one table (csv, json) and one plot")
    p.add_argument(
        "--metrics", required=True, nargs="+", type=Path, help="{variant}/metrics.json of every variant"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="folder for summary.csv, summary.json, summary.png"
    )

    p = add(
        "animate",
        cmd_animate,
        "build an avatar from 4 input views once and render a sequence of expression codes to an mp4",
    )
    p.add_argument("--model", required=True, type=Path, help="model.pt written by avat3r train")
    p.add_argument("--index", type=Path, help="dataset_index.json")
    p.add_argument(
        "--avatar", type=Path, help="instead of --index: an avatar folder written by avat3r create"
    )
    p.add_argument("--subject", help="subject to animate (default: the first test subject of the index)")
    p.add_argument(
        "--expressions",
        default="shard",
        help="'shard' (the subject's codes of its supervision frames, in order) or a .npy of shape (T, 256)",
    )
    p.add_argument(
        "--camera",
        default="orbit",
        help="a supervision camera id (fixed view) or 'orbit' (swing around the head)",
    )
    p.add_argument("--fps", type=float, default=7.5, help="frames per second of the video")
    p.add_argument("--seed", type=int, default=0, help="seed of the loader that picks the 4 input views")
    p.add_argument("--batch", type=int, default=8, help="expressions decoded at once from the cache")
    p.add_argument(
        "--out", required=True, type=Path, help="video.mp4 to write (and <stem>_frames.png next to it)"
    )

    p = add(
        "create",
        cmd_create,
        "an avatar from uncalibrated phone photos (DUSt3R poses and focal, head frame, crops, Sapiens)",
    )
    p.add_argument("--images", required=True, nargs="+", type=Path, help="1..n_views photos of one person")
    p.add_argument("--model", required=True, type=Path, help="model.pt written by avat3r train")
    p.add_argument("--out", required=True, type=Path, help="avatar folder to write (for animate --avatar)")
    p.add_argument("--dust3r", help="DUSt3R checkpoint (.pth or HF folder); default: tiny RANDOM WEIGHTS")
    p.add_argument("--sapiens", help="Sapiens checkpoint; default: tiny RANDOM WEIGHTS")
    p.add_argument("--sapiens-model", default="sapiens_2b", help="architecture of a Sapiens state dict")
    p.add_argument("--dust3r-resolution", type=int, default=512, help="DUSt3R input height (width 3/4)")
    p.add_argument("--iterations", type=int, default=300, help="global alignment iterations")

    p = add("validate", cmd_validate, "re-check stores against their manifests and name corrupt arrays")
    p.add_argument("paths", nargs="+", type=Path, help="store folders (*.zarr)")

    p = add("plan", cmd_plan, "jobs, bytes and GPU hours per stage of a config, before running it")
    p.add_argument(
        "--subjects", type=int, help="describe a capture instead of the configured one (synthetic or real)"
    )
    p.add_argument("--cameras", type=int, default=80)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=667)
    p.add_argument("--front-facing", type=float, default=0.5, help="share of cameras that may be inputs")

    p = add("report-subject", cmd_report_subject, "report figures of one subject: crops, positions, dome")
    p.add_argument("--crops", required=True, type=Path, help="crops.zarr")
    p.add_argument("--positions", required=True, type=Path, help="positions.zarr")
    p.add_argument("--views", required=True, type=Path, help="views.json")
    p.add_argument("--index", required=True, type=Path, help="capture_index.json (head centre)")
    p.add_argument("--max-views", type=int, default=12, help="views shown on the contact sheets")
    p.add_argument("--out-crops", required=True, type=Path, help="contact sheet PNG to write")
    p.add_argument("--out-positions", required=True, type=Path, help="position-map sheet PNG to write")
    p.add_argument("--out-dome", required=True, type=Path, help="camera dome PNG to write")

    p = add("report-training", cmd_report_training, "report figures of one variant: curves, metrics table")
    p.add_argument("--variant", required=True)
    p.add_argument("--history", required=True, type=Path, help="train_log.jsonl of the run")
    p.add_argument("--metrics", required=True, type=Path, help="evaluate metrics.json")
    p.add_argument("--grid", type=Path, help="evaluate grid.png, copied next to the figures")
    p.add_argument("--summary", nargs="*", default=[], help="paths named in the table (rule gather)")
    p.add_argument("--out-curves", required=True, type=Path, help="curves PNG to write")
    p.add_argument("--out-table", required=True, type=Path, help="metrics HTML to write")
    p.add_argument("--out-grid", type=Path, help="where to copy --grid")

    p = add("report-index", cmd_report_index, "list report figures with their sizes and checksums")
    p.add_argument("figures", nargs="+", type=Path)
    p.add_argument("--out", required=True, type=Path, help="figures.json to write")

    add("subjects", cmd_subjects, "list the subjects the config selects")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except Avat3rError as exc:
        code = getattr(exc, "exit_code", 1)
        print(f"avat3r {args.command}: {'error: ' if code == 1 else ''}{exc}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

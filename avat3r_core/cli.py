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
    generate_synthetic_capture(
        root, groundtruth, synthetic_config(section), workers=args.workers, progress=not args.quiet
    )
    log.info("synthetic capture written to %s (ground truth in %s)", root, groundtruth)


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
    from avat3r_core.stages.shards import write_dataset_index

    config = _config(args)
    shards = {Path(path).parent.name: Path(path) for path in args.shards}
    write_dataset_index(shards, config["shards"], args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from avat3r_core.recon.train import run_training

    config = _config(args)
    final = run_training(config, args.index, args.out, progress=not args.quiet)
    log.info("trained model written to %s", final)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from avat3r_core.recon.evaluate import evaluate_heldout

    config = _config(args)
    evaluate_heldout(
        args.model,
        args.index,
        args.out,
        split=config["evaluate"]["split"],
        seed=config["evaluate"]["seed"],
        max_items=config["evaluate"]["max_items"],
        renderer=config["train"]["renderer"],
        device=config["train"]["device"],
        progress=not args.quiet,
    )


def cmd_animate(args: argparse.Namespace) -> None:
    from avat3r_core.recon.animate import animate

    config = _config(args)
    summary = animate(
        args.model,
        args.index,
        args.out,
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
    from avat3r_core.capture.synthetic import SyntheticConfig, image_size
    from avat3r_core.plan import CaptureSize, format_plan, plan

    config = _config(args)
    if args.subjects:
        size = CaptureSize(
            args.subjects, args.cameras, args.frames, args.height, args.width, args.front_facing
        )
    else:
        synthetic = config["synthetic"]
        cfg = SyntheticConfig(**{k: v for k, v in synthetic.items() if k not in {"enabled", "groundtruth"}})
        height, width = image_size(cfg.downsample)
        frames = cfg.frames_per_segment * len(cfg.segments)
        size = CaptureSize(cfg.n_subjects, cfg.n_cameras, frames, height, width, args.front_facing)
    print(format_plan(plan(config, size), size))


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

    p = add("synthetic", cmd_synthetic, "write a synthetic capture in the Ava-256 layout, with ground truth")
    p.add_argument("--out", help="capture root (default: capture.root)")
    p.add_argument("--groundtruth", help="ground-truth folder (default: synthetic.groundtruth)")
    p.add_argument("--workers", type=int, default=2, help="processes used for rendering")

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
    p.add_argument("--out", required=True, type=Path, help="dataset_index.json to write")

    p = add("train", cmd_train, "train the reconstruction model from the shards (torchrun for many GPUs)")
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json (its train split is used)")
    p.add_argument("--out", required=True, type=Path, help="run folder: model.pt, checkpoints/, tensorboard/")

    p = add("evaluate", cmd_evaluate, "score a trained model and the trivial baselines on held-out subjects")
    p.add_argument("--model", required=True, type=Path, help="model.pt written by avat3r train")
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json")
    p.add_argument("--out", required=True, type=Path, help="folder for metrics.json and grid.png")

    p = add(
        "animate",
        cmd_animate,
        "build an avatar from 4 input views once and render a sequence of expression codes to an mp4",
    )
    p.add_argument("--model", required=True, type=Path, help="model.pt written by avat3r train")
    p.add_argument("--index", required=True, type=Path, help="dataset_index.json")
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

    p = add("validate", cmd_validate, "re-check stores against their manifests and name corrupt arrays")
    p.add_argument("paths", nargs="+", type=Path, help="store folders (*.zarr)")

    p = add("plan", cmd_plan, "jobs and bytes per stage of a config, before running it")
    p.add_argument("--subjects", type=int, help="describe a capture instead of the synthetic one")
    p.add_argument("--cameras", type=int, default=80)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=667)
    p.add_argument("--front-facing", type=float, default=0.5, help="share of cameras that may be inputs")

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

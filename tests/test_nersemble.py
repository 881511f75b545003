"""NeRSemble reader on a synthetic capture written in the v2 layout (real mp4s through imageio-ffmpeg), the
benchmark layout derived from it, FLAME expression sources, bad input and the evaluation-only guard.

Video tolerance: the generator encodes H.264 yuv420p at CRF 12 over frames carrying Gaussian sensor noise of
1.5 levels; decoded frames come back at ~38-39 dB PSNR against the rendered uint8 images. 35 dB leaves room
for codec builds while still failing for a wrong frame (neighbouring frames differ by head motion) or a
colour-order or size mistake (both far below 30 dB). Frame accuracy is checked separately: each decoded
frame must be closest to its own render among all frames of its sequence.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from avat3r_core.capture import open_capture, subject_ids
from avat3r_core.capture.expressions import (
    FlameDims,
    flame_code,
    load_benchmark_tracking,
    load_gagavatar_tracking,
    split_gagavatar_key,
)
from avat3r_core.capture.nersemble import (
    FRAME_BLOCK,
    SEQUENCE_NAMES,
    NeRSembleCapture,
    estimate_head_center,
    sequence_number,
)
from avat3r_core.capture.synthetic import SyntheticConfig
from avat3r_core.capture.synthetic.nersemble_writer import (
    generate_synthetic_nersemble,
    nersemble_scene,
    write_benchmark_tracking,
    write_video,
)
from avat3r_core.capture.synthetic.render import clean_plate
from avat3r_core.config import REPO_ROOT, evaluated_models, trained_variants, validate_config
from avat3r_core.errors import CaptureError, ConfigError
from avat3r_core.stages.capture_index import build_capture_index
from avat3r_core.stages.shards import assign_splits
from tests.test_workflow import run_snakemake

CFG = SyntheticConfig(
    n_subjects=2,
    n_cameras=4,
    frames_per_segment=4,
    segments=("EXP_eye_wide", "EXP_jaw003"),
    downsample=16,
    missing_fraction=0.0,
    min_missing=0,
    seed=3,
)
PID = "001"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("nersemble")
    generate_synthetic_nersemble(base / "capture", base / "groundtruth", CFG, progress=False)
    return base / "capture", base / "groundtruth"


@pytest.fixture
def copy(capture: tuple[Path, Path], tmp_path: Path) -> Path:
    root = tmp_path / "capture"
    shutil.copytree(capture[0], root)
    return root


def gt_arrays(groundtruth: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(groundtruth / PID / name) as npz:
        return {key: npz[key] for key in npz.files}


def capture_section(root: Path, **extra) -> dict:
    section = {"dataset": "nersemble", "root": str(root), **extra}
    return validate_config({"results": "r", "capture": section})["capture"]


# -- calibration, timeline, pixels ---------------------------------------------------------------------------
def test_cameras_and_timeline_match_groundtruth(capture):
    root, groundtruth = capture
    reader = NeRSembleCapture(root, PID)
    cams = gt_arrays(groundtruth, "cameras.npz")
    meta = json.loads((groundtruth / PID / "meta.json").read_text())
    assert reader.layout == "v2"
    assert reader.image_size() == tuple(meta["image_size"]) == (200, 138)
    assert reader.camera_ids == sorted(str(c) for c in cams["camera_ids"])
    for i, camera in enumerate(cams["camera_ids"]):
        got = reader.cameras()[str(camera)]
        np.testing.assert_allclose(got.K, cams["K"][i], atol=1e-6)
        np.testing.assert_allclose(got.w2c, cams["w2c"][i], atol=1e-6)  # metres on both sides
    assert [f.frame for f in reader.frames()] == meta["frame_ids"]
    assert reader.sequences == ["EXP-2-eyes", "EXP-8-jaw-1"]
    assert list(reader.segments()) == reader.sequences
    first = sequence_number("EXP-2-eyes") * FRAME_BLOCK
    assert reader.segments()["EXP-2-eyes"] == [first + t for t in range(4)]
    assert reader.missing_images() == [] and reader.uncalibrated_cameras() == []


def test_sequence_numbers_are_stable():
    assert sequence_number("EXP-1-head") == SEQUENCE_NAMES.index("EXP-1-head") + 1
    assert sequence_number("ZZZ", ["AAA", "ZZZ", "FREE"]) == 1001
    assert sequence_number("AAA", ["AAA", "ZZZ"]) == 1000


def test_decoded_frames_match_renders(capture):
    root, groundtruth = capture
    reader = NeRSembleCapture(root, PID)
    meta = json.loads((groundtruth / PID / "meta.json").read_text())
    index = {frame: i for i, frame in enumerate(meta["frame_ids"])}
    for camera in reader.camera_ids:
        rendered = gt_arrays(groundtruth, f"cam{camera}.npz")["image"]
        for sequence, frames in reader.segments().items():
            for frame in frames:
                decoded = reader.image(camera, frame)
                assert decoded.dtype == np.uint8 and decoded.shape == (200, 138, 3)
                scores = [psnr(decoded, rendered[index[other]]) for other in frames]
                assert scores[frames.index(frame)] > 35.0, (camera, frame, scores)
                assert int(np.argmax(scores)) == frames.index(frame), (camera, sequence, scores)


def test_random_access_equals_sequential_and_decoders_are_reused(capture, monkeypatch):
    import imageio.v2 as imageio

    root, _ = capture
    opened: list[str] = []
    original = imageio.get_reader

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(imageio, "get_reader", counting)
    reader = NeRSembleCapture(root, PID)
    camera = reader.camera_ids[1]
    frames = [f.frame for f in reader.frames()]
    opened.clear()
    sequential = {frame: reader.image(camera, frame) for frame in frames}
    assert len(opened) == len(reader.sequences)  # one decoder per video, kept open across in-order reads
    for frame in [frames[3], frames[0], frames[6], frames[2], frames[2], frames[7]]:
        np.testing.assert_array_equal(reader.image(camera, frame), sequential[frame])
    reader.close()


def test_background_plates(capture):
    root, _ = capture
    reader = NeRSembleCapture(root, PID)
    scene = nersemble_scene(CFG, PID)
    for c, camera in enumerate(scene.dome.camera_ids):
        plate = reader.background(camera)
        assert plate.shape == (200, 138, 3) and plate.dtype == np.uint8
        truth = np.clip(clean_plate(scene, c) * 255.0 + 0.5, 0, 255)
        assert psnr(plate, truth) > 35.0  # JPEG q95 over 1.5-level sensor noise
    with pytest.raises(CaptureError, match="no foreground masks"):
        reader.mask(reader.camera_ids[0], reader.frames()[0].frame)


# -- head pose -----------------------------------------------------------------------------------------------
def add_tracking(root: Path, groundtruth: Path, scale: float) -> dict[str, np.ndarray]:
    """Benchmark-format tracking whose model-to-world is [scale R | t] of the true head poses."""
    poses = gt_arrays(groundtruth, "head_pose.npz")
    meta = json.loads((groundtruth / PID / "meta.json").read_text())
    rng = np.random.default_rng(0)
    written = {}
    for sequence in meta["sequences"]:
        rows = [i for i, s in enumerate(meta["frame_segments"]) if s == sequence]
        expression = rng.normal(size=(len(rows), 100)).astype(np.float32)
        jaw = rng.normal(size=(len(rows), 3)).astype(np.float32)
        eyes = rng.normal(size=(len(rows), 6)).astype(np.float32)
        path = root / PID / "sequences" / sequence / "tracking" / "flame2023_tracking_v2.npz"
        write_benchmark_tracking(path, poses["head_to_world"][rows], scale, expression, jaw, eyes)
        written[sequence] = path
    return written


def test_head_pose_from_benchmark_tracking(capture, copy):
    _, groundtruth = capture
    add_tracking(copy, groundtruth, scale=1.3)
    reader = NeRSembleCapture(copy, PID)
    poses = gt_arrays(groundtruth, "head_pose.npz")
    assert reader.uses_tracking
    for frame, truth in zip(poses["frame_ids"], poses["head_to_world"], strict=True):
        np.testing.assert_allclose(reader.head_pose(int(frame)), truth, atol=1e-6)
        model_to_world = reader.flame_model_to_world(int(frame))
        np.testing.assert_allclose(model_to_world[:3, :3], 1.3 * truth[:3, :3], atol=1e-6)
        np.testing.assert_allclose(model_to_world[:3, 3], truth[:3, 3], atol=1e-6)
    index = build_capture_index(reader)
    assert index["dataset"] == "nersemble" and len(index["head_to_world"]) == len(poses["frame_ids"])
    first = reader.head_pose(int(poses["frame_ids"][0]))
    center_world = first[:3, :3] @ np.asarray(index["head_center"]) + first[:3, 3]
    np.testing.assert_allclose(center_world, reader.head_center_world, atol=1e-9)
    with pytest.raises(CaptureError, match=r"positions\.backend dust3r"):
        reader.mesh_faces()


def test_head_centre_without_tracking(capture):
    root, groundtruth = capture
    reader = NeRSembleCapture(root, PID)
    assert not reader.uses_tracking
    truth = gt_arrays(groundtruth, "head_pose.npz")["head_to_world"][0][:3, 3]
    estimate = reader.head_center_world
    assert np.linalg.norm(estimate - truth) < 0.04, (estimate, truth)
    pose = reader.head_pose(reader.frames()[-1].frame)
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], estimate)
    # head +z faces the rig (the mean camera direction; NeRSemble's cameras are all in front of the face,
    # the synthetic dome surrounds the head)
    directions = [
        (c.center - estimate) / np.linalg.norm(c.center - estimate) for c in reader.cameras().values()
    ]
    mean = np.mean(directions, axis=0)
    np.testing.assert_allclose(pose[:3, 2], mean / np.linalg.norm(mean), atol=1e-12)
    fixed = NeRSembleCapture(root, PID, head_center=[0.1, 0.2, 1.0])
    np.testing.assert_allclose(fixed.head_pose(fixed.frames()[0].frame)[:3, 3], [0.1, 0.2, 1.0])
    with pytest.raises(CaptureError, match="have no FLAME tracking"):
        NeRSembleCapture(root, PID, head_pose="tracking").frames()


def test_estimate_head_center_from_exact_silhouettes(capture):
    """With the generator's true alpha as silhouettes the estimate is as good as the method allows."""
    root, groundtruth = capture
    reader = NeRSembleCapture(root, PID)
    alphas = {c: gt_arrays(groundtruth, f"cam{c}.npz")["alpha"][0] for c in reader.camera_ids}
    truth = gt_arrays(groundtruth, "head_pose.npz")["head_to_world"][0][:3, 3]
    assert np.linalg.norm(estimate_head_center(reader.cameras(), alphas) - truth) < 0.04
    with pytest.raises(ValueError, match="fewer than two"):
        estimate_head_center(reader.cameras(), {c: np.zeros_like(a) for c, a in alphas.items()})


# -- benchmark layout ----------------------------------------------------------------------------------------
def to_benchmark_layout(root: Path, groundtruth: Path) -> None:
    """Per-camera K at video resolution, videos composited on white, alpha videos (benchmark layout)."""
    reader = NeRSembleCapture(root, PID)
    cams = gt_arrays(groundtruth, "cameras.npz")
    calibration = {
        "intrinsics": {str(c): cams["K"][i].tolist() for i, c in enumerate(cams["camera_ids"])},
        "world_2_cam": {str(c): cams["w2c"][i].tolist() for i, c in enumerate(cams["camera_ids"])},
    }
    (root / PID / "calibration" / "camera_params.json").write_text(json.dumps(calibration))
    meta = json.loads((groundtruth / PID / "meta.json").read_text())
    for camera in reader.camera_ids:
        truth = gt_arrays(groundtruth, f"cam{camera}.npz")
        for sequence in reader.sequences:
            rows = [i for i, s in enumerate(meta["frame_segments"]) if s == sequence]
            alpha = truth["alpha"][rows].astype(np.float64)[..., None] / 255.0
            composite = (truth["image"][rows] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
            folder = root / PID / "sequences" / sequence
            write_video(folder / "images" / f"cam_{camera}.mp4", list(composite))
            write_video(
                folder / "alpha_maps" / f"cam_{camera}.mp4",
                [np.repeat(a, 3, -1) for a in truth["alpha"][rows][..., None]],
            )
    shutil.rmtree(root / PID / "sequences" / "BACKGROUND")


def test_benchmark_layout(capture, copy):
    _, groundtruth = capture
    to_benchmark_layout(copy, groundtruth)
    add_tracking(copy, groundtruth, scale=1.0)
    reader = NeRSembleCapture(copy, PID)
    cams = gt_arrays(groundtruth, "cameras.npz")
    assert reader.layout == "benchmark"
    for i, camera in enumerate(cams["camera_ids"]):
        np.testing.assert_allclose(reader.cameras()[str(camera)].K, cams["K"][i], atol=1e-6)
    camera, frame = reader.camera_ids[0], reader.frames()[0].frame
    alpha = gt_arrays(groundtruth, f"cam{camera}.npz")["alpha"][0]
    mask = reader.mask(camera, frame)
    assert mask.shape == (200, 138) and np.mean((mask > 127) == (alpha > 127)) > 0.98
    plate = reader.background(camera)
    assert plate.shape == (200, 138, 3) and np.all(np.abs(plate.astype(int) - 255) <= 3)
    assert reader.uses_tracking


# -- expression sources --------------------------------------------------------------------------------------
def test_flame_nersemble_codes(capture, copy):
    _, groundtruth = capture
    paths = add_tracking(copy, groundtruth, scale=1.0)
    reader = open_capture(capture_section(copy), PID)  # expression_source null -> flame_nersemble
    sequence = reader.sequences[1]
    tracking = load_benchmark_tracking(paths[sequence])
    frame = reader.segments()[sequence][2]
    code = reader.expression_code(frame)
    expected = np.concatenate([tracking.expression[2], tracking.jaw[2], tracking.eyes[2]]).astype(np.float32)
    assert code.dtype == np.float32 and code.shape == (109,)
    np.testing.assert_array_equal(code, expected)
    small = open_capture(capture_section(copy, flame_dims={"expression": 10, "jaw": 0, "eyes": 6}), PID)
    np.testing.assert_array_equal(
        small.expression_code(frame), np.concatenate([expected[:10], expected[103:]])
    )
    ava = open_capture(capture_section(copy, expression_source="ava256"), PID)
    with pytest.raises(ConfigError, match="expression_source"):
        ava.expression_code(frame)


def gagavatar_entry(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One entry as GAGAvatar's engine_optim writes it (float32 arrays)."""
    posecode = np.zeros(6, np.float32)
    posecode[3:] = rng.normal(size=3)
    return {
        "bbox": rng.uniform(size=4).astype(np.float32),
        "shapecode": rng.normal(size=300).astype(np.float32),
        "expcode": rng.normal(size=100).astype(np.float32),
        "posecode": posecode,
        "eyecode": rng.normal(size=6).astype(np.float32),
        "transform_matrix": np.eye(3, 4, dtype=np.float32),
    }


def test_gagavatar_loader_and_codes(capture, tmp_path):
    root, _ = capture
    rng = np.random.default_rng(1)
    reader = NeRSembleCapture(root, PID)
    files = {}
    for sequence in reader.sequences:
        # track_video.py on sequences/{SEQ}/images/cam_222200037.mp4: keys 'cam_222200037_{idx}'; a >50 fps
        # video keeps every 2nd frame (1, 3, ...), i.e. offset 1, stride 2
        data = {f"cam_222200037_{idx}": gagavatar_entry(rng) for idx in range(2)}
        path = tmp_path / PID / sequence / "smoothed.pkl"
        path.parent.mkdir(parents=True)
        path.write_bytes(pickle.dumps(data))
        files[sequence] = data
    assert split_gagavatar_key("cam_222200037_12") == ("cam_222200037", 12)
    loaded = load_gagavatar_tracking(tmp_path / PID / reader.sequences[0] / "smoothed.pkl")
    assert set(loaded) == {"cam_222200037"} and set(loaded["cam_222200037"]) == {0, 1}
    section = capture_section(
        root,
        expression_source="flame_gagavatar",
        flame_tracking=str(tmp_path / "{subject}" / "{sequence}" / "smoothed.pkl"),
        flame_frame_stride=2,
        flame_frame_offset=1,
    )
    driven = open_capture(section, PID)
    sequence = reader.sequences[1]
    frames = reader.segments()[sequence]
    entry = files[sequence]["cam_222200037_1"]  # position 3 = 1 + 2 x 1
    expected = np.concatenate([entry["expcode"], entry["posecode"][3:], entry["eyecode"]])
    np.testing.assert_allclose(driven.expression_code(frames[3]), expected)
    assert flame_code(loaded["cam_222200037"][0], FlameDims(50, 3, 0)).shape == (53,)
    with pytest.raises(CaptureError, match="not tracked") as info:
        driven.expression_code(frames[0])
    assert f"subject {PID}" in str(info.value) and f"frame {frames[0]}" in str(info.value)
    wrong_video = open_capture({**section, "flame_video": "cam_222200099"}, PID)
    with pytest.raises(CaptureError, match="no video 'cam_222200099'"):
        wrong_video.expression_code(frames[1])
    with pytest.raises(ConfigError, match="flame_tracking"):
        open_capture(capture_section(root, expression_source="flame_gagavatar"), PID).expression_code(
            frames[1]
        )


def test_gagavatar_bad_files(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"nounderscore": {}}))
    with pytest.raises(CaptureError, match="bad GAGAvatar entry"):
        load_gagavatar_tracking(bad)
    with pytest.raises(CaptureError, match="does not exist"):
        load_gagavatar_tracking(tmp_path / "missing.pkl")


# -- bad input -----------------------------------------------------------------------------------------------
def test_video_shorter_than_the_frame_list(capture, copy):
    _, groundtruth = capture
    reader = NeRSembleCapture(copy, PID)
    camera, sequence = reader.camera_ids[2], reader.sequences[0]
    path = copy / PID / "sequences" / sequence / "images" / f"cam_{camera}.mp4"
    rendered = gt_arrays(groundtruth, f"cam{camera}.npz")["image"]
    write_video(path, list(rendered[:2]))  # truncated: 2 of 4 frames
    reader = NeRSembleCapture(copy, PID)
    frame = reader.segments()[sequence][3]
    with pytest.raises(CaptureError) as info:
        reader.image(camera, frame)
    message = str(info.value)
    for part in (f"subject {PID}", f"camera {camera}", f"frame {frame}", str(path), "has 2 frames"):
        assert part in message, message
    with pytest.raises(CaptureError) as info:
        reader.missing_images()
    assert f"camera {camera}" in str(info.value) and str(path) in str(info.value)
    assert "has 2 frames" in str(info.value) and "timeline of sequence" in str(info.value)
    np.testing.assert_array_equal(reader.image(camera, reader.segments()[sequence][1]).shape, (200, 138, 3))


def test_camera_missing_from_the_calibration(capture, copy):
    reader = NeRSembleCapture(copy, PID)
    camera = reader.camera_ids[0]
    calibration = copy / PID / "calibration" / "camera_params.json"
    data = json.loads(calibration.read_text())
    del data["world_2_cam"][camera]
    calibration.write_text(json.dumps(data))
    reader = NeRSembleCapture(copy, PID)
    assert camera not in reader.camera_ids and reader.uncalibrated_cameras() == [camera]
    frame = reader.frames()[0].frame
    with pytest.raises(CaptureError) as info:
        reader.image(camera, frame)
    message = str(info.value)
    for part in (
        f"subject {PID}",
        f"camera {camera}",
        f"frame {frame}",
        str(calibration),
        "not in the calibration",
    ):
        assert part in message, message
    with pytest.raises(CaptureError, match="not in the calibration"):
        NeRSembleCapture(copy, PID, cameras=[camera]).cameras()


# -- configuration and the evaluation-only guard -------------------------------------------------------------
def test_evaluation_only_capture_trains_nothing(capture):
    root, _ = capture
    config = validate_config({"results": "r", "capture": {"dataset": "nersemble", "root": str(root)}})
    assert config["capture"]["nersemble"]["head_pose"] == "auto"
    assert subject_ids(config) == ["001", "002"]
    # default shards (test_count 1) would train on 001: an evaluation-only capture holds everyone out
    assert trained_variants(config) == []
    assert assign_splits(["001", "002"], config["shards"], evaluation_only=True) == {
        "001": "test",
        "002": "test",
    }
    assert assign_splits(["001", "002"], config["shards"]) == {"001": "train", "002": "test"}
    scored = validate_config({**config, "evaluate": {"models": {"ava": "m.pt"}}})
    assert evaluated_models(scored) == {"ava": "m.pt"}
    allowed = validate_config({**config, "capture": {**config["capture"], "evaluation_only": False}})
    assert trained_variants(allowed) == ["base"] and evaluated_models(allowed) == {"base": None}
    with pytest.raises(ConfigError, match=r"evaluate\.models.*base also named in variants"):
        evaluated_models(validate_config({**allowed, "evaluate": {"models": {"base": "m.pt"}}}))
    with pytest.raises(ConfigError, match="flame_dims"):
        validate_config(
            {"results": "r", "capture": {"dataset": "nersemble", "root": "x", "flame_dims": {"jaw": 2}}}
        )


def test_cli_writes_the_nersemble_layout(tmp_path):
    from avat3r_core.cli import main

    config = {
        "results": str(tmp_path / "results"),
        "capture": {"dataset": "nersemble", "root": str(tmp_path / "cap"), "evaluation_only": False},
        "synthetic": {
            "enabled": True,
            "layout": "nersemble",
            "n_subjects": 1,
            "n_cameras": 4,
            "frames_per_segment": 2,
            "groundtruth": str(tmp_path / "gt"),
            "min_missing": 0,
        },
    }
    assert main(["-q", "synthetic", "--config", json.dumps(config), "--with-tracking"]) == 0
    assert subject_ids(validate_config(config)) == ["001"]
    reader = open_capture(validate_config(config)["capture"], "001")
    assert reader.uses_tracking and len(reader.sequences) == 5
    frame = reader.frames()[0].frame
    assert reader.image(reader.camera_ids[0], frame).shape == (200, 138, 3)
    assert reader.expression_code(frame).shape == (109,)
    # the same FLAME codes as GAGAvatar tracker output (configs/nersemble.yaml drives with these)
    section = dict(
        validate_config(config)["capture"],
        expression_source="flame_gagavatar",
        flame_tracking="{root}/gagavatar/{subject}/optim.pkl",
        flame_video="{sequence}",
    )
    gagavatar = open_capture(section, "001")
    frames = [f.frame for f in reader.frames()]
    assert len(frames) == 10 and any(reader.expression_code(f).any() for f in frames)
    for f in frames:
        np.testing.assert_array_equal(gagavatar.expression_code(f), reader.expression_code(f))


# -- the DAG over a NeRSemble capture ------------------------------------------------------------------------
def test_input_files_are_the_files_the_reader_reads(capture):
    root, _ = capture
    reader = open_capture(capture_section(root), PID)
    files = reader.input_files()
    assert files[0] == root / PID / "calibration" / "camera_params.json"
    videos = [p for p in files if p.suffix == ".mp4"]
    assert len(videos) == len(reader.sequences) * len(reader.camera_ids)
    assert all(p.is_file() for p in files)
    assert len([p for p in files if p.suffix == ".jpg"]) == len(reader.camera_ids)
    one = reader.camera_ids[0]
    narrowed = open_capture(capture_section(root, nersemble={"cameras": [one]}), PID).input_files()
    assert {p.name for p in narrowed if p.suffix != ".json"} == {f"cam_{one}.mp4", f"image_{one}.jpg"}


def test_dry_run_over_a_nersemble_capture(capture, tmp_path):
    # Evaluation-only capture: every subject held out; no tracked mesh, so positions come from DUSt3R.
    root, _ = capture
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["synthetic"]["enabled"] = False
    config["capture"].update(dataset="nersemble", root=str(root))
    config["shards"].update(test_subjects=["001", "002"])
    config["positions"]["backend"] = "dust3r"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "--configfile", str(path), "-n", "dataset_index")
    out = result.stdout + result.stderr
    assert "capture_index" in out and "synthetic_capture" not in out
    assert str(root / PID / "calibration" / "camera_params.json") in out
    assert ".mp4" in out

"""Driving: one encode per avatar, frames equal to the full forward pass, orbit cameras, the mp4 and the CLI.

The shard fixture is the first tiny synthetic subject (64 px input crops, 83 px supervision crops); the model
is the tiny preset trained for one step, with its Gaussian heads perturbed where a test needs the expression
to visibly change the frames (the offset heads of a barely trained model are still almost zero).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from avat3r_core import cli
from avat3r_core.recon.animate import (
    AnimateError,
    build_avatar,
    drive,
    head_centre,
    orbit_cameras,
    render_sequence,
    write_mp4,
)
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.evaluate import load_trained_model
from avat3r_core.recon.predict import render_supervision
from avat3r_core.recon.train import run_training
from tests.test_train import config

try:
    import imageio.v2 as imageio
    import imageio_ffmpeg  # noqa: F401
except ImportError:  # pragma: no cover - the mp4 tests need it
    imageio = None
needs_ffmpeg = pytest.mark.skipif(imageio is None, reason="imageio-ffmpeg is not installed")


@pytest.fixture(scope="module")
def trained(shard_index, tmp_path_factory):
    return run_training(
        config(steps=1), shard_index, tmp_path_factory.mktemp("animate") / "run", progress=False
    )


@pytest.fixture(scope="module")
def sample(shard_index):
    return Avat3rShardDataset(shard_index, n_supervision=2, seed=0)[0]


def _perturbed_model(path):
    model, _ = load_trained_model(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def _batch(sample: dict, expression: torch.Tensor) -> dict:
    batch = {k: v[None] if isinstance(v, torch.Tensor) else [v] for k, v in sample.items()}
    batch["expression"] = expression[None]
    return batch


def test_driving_encodes_once_and_equals_the_full_forward_pass(trained, sample) -> None:
    model = _perturbed_model(trained)
    generator = torch.Generator().manual_seed(1)
    codes = torch.cat([sample["expression"][None], torch.randn(4, 256, generator=generator)])
    calls = []
    encode = model.encode

    def counting(batch):
        calls.append(1)
        return encode(batch)

    model.encode = counting
    avatar = build_avatar(model, sample)
    size = sample["target_rgb"].shape[-1]
    camera = (sample["target_K"][:1], sample["target_w2c"][:1], size)
    driven = torch.cat(list(render_sequence(avatar, codes, camera, batch=2)))  # batches of 2, 2, 1
    frames = drive(avatar, codes, camera, batch=3)
    assert len(calls) == 1, "the cache must be reused: encode ran more than once"
    assert driven.shape == (5, 3, size, size) and frames.shape == (5, size, size, 3)
    assert frames.dtype == np.uint8

    model.encode = encode
    with torch.no_grad():
        reference = torch.stack(
            [render_supervision(model(_batch(sample, c)), _batch(sample, c), 0).pred[0] for c in codes]
        )
    worst = float((driven - reference).abs().max())
    assert worst < 1e-5, f"driven frames differ from model(batch) renders by {worst}"
    expected = np.round(reference.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255)
    assert np.abs(frames.astype(float) - expected).max() <= 1
    # Control: the expression changes the frames, so the comparison above is not vacuous.
    assert float((reference[1:] - reference[0]).abs().amax(dim=(1, 2, 3)).min()) > 1e-3


def test_head_centre_and_orbit_cameras_look_at_the_head(sample, mesh_positions) -> None:
    size = sample["input_rgb"].shape[-1]
    centre = head_centre(sample["input_K"], sample["input_w2c"], size, size)
    # The crop stage centres every input crop on the projected head centre of the capture index.
    assert float((centre - torch.from_numpy(mesh_positions["index"].head_center)).norm()) < 0.01

    def project(K, w2c, point):
        camera = w2c[:3, :3].double() @ point + w2c[:3, 3].double()
        uv = K.double() @ (camera / camera[2])
        return uv[:2], float(camera[2])

    for K, w2c in zip(sample["input_K"], sample["input_w2c"], strict=True):
        uv, _ = project(K, w2c, centre)
        assert float((uv - size / 2).abs().max()) < 1.0

    out = sample["target_rgb"].shape[-1]
    K, w2c = sample["target_K"][0], sample["target_w2c"][0]
    distance = float((-(w2c[:3, :3].double().T @ w2c[:3, 3].double()) - centre).norm())

    up = -w2c[1, :3].double()  # the reference camera's image-up direction: the orbit's axis

    def angle(a: torch.Tensor, b: torch.Tensor) -> float:
        """Angle (degrees) between two directions from the head centre, about the orbit's axis."""
        a, b = a - (a @ up) * up, b - (b @ up) * up
        return float(torch.rad2deg(torch.atan2(torch.linalg.cross(a, b).norm(), a @ b)))

    for full_circle in (False, True):
        path = orbit_cameras(K, w2c, out, out, centre, 8, degrees=30.0, full_circle=full_circle)
        assert len(path) == 8 and (path.width, path.height) == (out, out)
        eyes = []
        for k, m in zip(path.K, path.w2c, strict=True):
            uv, depth = project(k, m, centre)
            assert float((uv - out / 2).abs().max()) < 1e-3  # the head centre is the image centre
            assert abs(depth - distance) < 1e-4  # at the reference camera's distance
            eyes.append(-(m[:3, :3].double().T @ m[:3, 3].double()) - centre)
            assert abs(float((eyes[-1] - eyes[0]) @ up)) < 1e-5  # the orbit keeps the elevation
        reference = -(w2c[:3, :3].double().T @ w2c[:3, 3].double()) - centre
        assert angle(eyes[0], reference) < 0.01  # the orbit starts at the reference view
        if full_circle:
            assert [round(angle(eyes[0], e)) for e in eyes] == [0, 45, 90, 135, 180, 135, 90, 45]
        else:  # +-30 degrees at the quarters, on opposite sides
            assert abs(angle(eyes[0], eyes[2]) - 30) < 1e-4 and abs(angle(eyes[2], eyes[6]) - 60) < 1e-4


@needs_ffmpeg
def test_mp4_has_every_frame_and_the_written_size(tmp_path) -> None:
    y, x = np.mgrid[0:83, 0:83] / 82.0
    frames = np.stack(  # smooth colour ramps moving from frame to frame (H.264 keeps them well)
        [np.stack([x, y, (x + y + t / 7) % 1.0], axis=-1) * 255 for t in range(7)]
    ).astype(np.uint8)
    path = write_mp4(frames, tmp_path / "clip.mp4", fps=7.5)
    reader = imageio.get_reader(path, format="FFMPEG")
    try:
        read = [frame for frame in reader]
        fps = reader.get_meta_data()["fps"]
    finally:
        reader.close()
    assert len(read) == 7 and read[0].shape == (84, 84, 3)  # odd sizes are padded to even ones
    assert fps == pytest.approx(7.5)
    assert np.abs(read[3][:83, :83].astype(int) - frames[3]).mean() < 4  # lossy, but the same picture
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left behind


def test_missing_imageio_ffmpeg_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(AnimateError, match=r"needs imageio and imageio-ffmpeg .*pip install"):
        write_mp4(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "clip.mp4")
    assert not list(tmp_path.iterdir())


def _animate(shard_index, trained, tmp_path, *extra: str) -> int:
    subject = json.loads(shard_index.read_text())["subjects"]
    return cli.main(
        [
            "-q",
            "animate",
            "--config",
            json.dumps(config()),
            "--model",
            str(trained),
            "--index",
            str(shard_index),
            "--subject",
            next(iter(subject)),
            *extra,
        ]
    )


@needs_ffmpeg
def test_cli_renders_the_shard_expressions_and_a_npy_sequence(shard_index, trained, tmp_path) -> None:
    dataset = Avat3rShardDataset(shard_index)
    meta = dataset.subjects[0]
    out = tmp_path / "orbit.mp4"
    assert _animate(shard_index, trained, tmp_path, "--out", str(out)) == 0
    reader = imageio.get_reader(out, format="FFMPEG")
    frames = [frame for frame in reader]
    reader.close()
    assert len(frames) == len(meta.targets)  # one frame per supervision timestep of the subject
    assert frames[0].shape == (84, 84, 3)
    assert (tmp_path / "orbit_frames.png").is_file()

    codes = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    np.save(tmp_path / "codes.npy", codes)
    camera = meta.supervision_cameras[0]
    fixed = tmp_path / "fixed.mp4"
    args = [
        "--expressions",
        str(tmp_path / "codes.npy"),
        "--camera",
        camera,
        "--fps",
        "10",
        "--out",
        str(fixed),
    ]
    assert _animate(shard_index, trained, tmp_path, *args) == 0
    reader = imageio.get_reader(fixed, format="FFMPEG")
    assert len([frame for frame in reader]) == 4 and reader.get_meta_data()["fps"] == pytest.approx(10)
    reader.close()


def test_bad_expressions_and_cameras_are_named(shard_index, trained, tmp_path, capsys) -> None:
    bad = tmp_path / "codes.npy"
    np.save(bad, np.zeros((4, 255), np.float32))
    assert _animate(
        shard_index, trained, tmp_path, "--expressions", str(bad), "--out", str(tmp_path / "a.mp4")
    )
    message = capsys.readouterr().err
    assert f"expression file {bad} has shape (4, 255), expected (T, 256)" in message
    args = ["--camera", "nope", "--out", str(tmp_path / "b.mp4")]
    assert _animate(shard_index, trained, tmp_path, *args) == 1
    assert "camera nope is not a supervision camera of subject" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.mp4"))

"""`avat3r create`: avatars from uncalibrated photos, then `avat3r animate --avatar` drives them.

Geometry is tested on synthetic pairwise DUSt3R predictions made from KNOWN cameras and a known scene (the
recovered poses and focal lengths, and the head-centric frame built from them); the pipeline end to end on
synthetic JPEG photos of different sizes and EXIF orientations with tiny random DUSt3R, Sapiens and Avat3r
networks (shapes, frames, files); and the bad inputs (too many photos, no head, unreadable file).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from avat3r_core import cli
from avat3r_core.config import validate_sections
from avat3r_core.create import CreateError, CreateOptions, create_avatar, load_created_avatar, load_photo
from avat3r_core.create.frame import CENTRE_BEHIND_SURFACE, HEAD_BREADTH_M, head_frame
from avat3r_core.create.matting import detect_head
from avat3r_core.create.pipeline import dust3r_window
from avat3r_core.geometry.cameras import Camera, pixel_centers
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.models.dust3r.free_alignment import align_free_cameras, estimate_focal, umeyama
from avat3r_core.recon.animate import AnimateError, animate
from avat3r_core.recon.checkpoint import save_checkpoint
from avat3r_core.recon.model import Avat3rModel, ModelConfig

try:
    import imageio.v2 as imageio
    import imageio_ffmpeg  # noqa: F401
except ImportError:  # pragma: no cover
    imageio = None
needs_ffmpeg = pytest.mark.skipif(imageio is None, reason="imageio-ffmpeg is not installed")

FAST = ["--dust3r-resolution", "64", "--iterations", "20"]
CONFIG = json.dumps({"seed": 0, "train": {"device": "cpu", "renderer": "torch"}})


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The alignment is many small ops: extra threads only contend on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ synthetic data


def synthetic_photo(width: int, height: int, yaw: float = 0.0, seed: int = 0) -> np.ndarray:
    """A person against a plain wall: head (hair, eyes, mouth shifted by ``yaw``), neck, shoulders."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width] + 0.5
    img = np.zeros((height, width, 3)) + np.array([188.0, 198.0, 214.0])
    img += (v / height - 0.5)[..., None] * 16
    s = min(width, height)
    cx, cy = width / 2 + 0.04 * s, height * 0.42
    a, b = 0.17 * s, 0.22 * s
    body = ((u - cx) / (0.46 * s)) ** 2 + ((v - (cy + 1.15 * b + 0.55 * s)) / (0.5 * s)) ** 2 <= 1
    img[body] = [45, 70, 140]
    img[(np.abs(u - cx) < 0.35 * a) & (v > cy) & (v < cy + 1.4 * b)] = [190, 140, 115]
    head = ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2 <= 1
    shade = 1.0 - 0.25 * np.clip((u - cx) / a * yaw, -1, 1)
    img[head] = (np.array([225.0, 172.0, 140.0]) * shade[..., None])[head]
    img[head & (v < cy - 0.45 * b)] = [70, 45, 30]
    for side in (-1, 1):
        eye = ((u - (cx + 0.6 * yaw * a + side * 0.38 * a)) / (0.12 * a)) ** 2 + (
            (v - (cy - 0.1 * b)) / (0.07 * b)
        ) ** 2 <= 1
        img[eye & head] = [30, 30, 40]
    img += rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save_jpeg(path, rgb: np.ndarray, orientation: int = 1):
    """Save as a phone would: sensor-oriented pixels plus the EXIF tag that rotates them upright."""
    stored = {1: rgb, 6: np.rot90(rgb, 1), 8: np.rot90(rgb, -1), 3: np.rot90(rgb, 2)}[orientation]
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def write_model(path, n_views: int):
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(image_size=32, feature_dim=32, width=32, self_layers=1, cross_layers=1)
    train = validate_sections({"train": {"n_views": n_views, "renderer": "torch", "device": "cpu"}})["train"]
    save_checkpoint(
        path,
        model=Avat3rModel(cfg),
        optimizer=None,
        step=0,
        config={"seed": 0, "model": asdict(cfg), "train": train},
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("create")
    shots = [(192, 256, 1, -0.5), (240, 320, 6, -0.15), (320, 240, 1, 0.15), (144, 192, 8, 0.5)]
    photos = [
        save_jpeg(root / f"phone{k}.jpg", synthetic_photo(w, h, yaw, seed=k), o)
        for k, (w, h, o, yaw) in enumerate(shots)
    ]
    return {
        "root": root,
        "photos": photos,
        "model4": write_model(root / "model4.pt", 4),
        "model1": write_model(root / "model1.pt", 1),
    }


# --------------------------------------------------------------------------------- geometry: known cameras


def _raycast(cam: Camera, semi_axes=(0.08, 0.11, 0.096), far: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """World points of every pixel: an ellipsoidal head at the origin in front of a far spherical wall."""
    uv = pixel_centers(cam.width, cam.height).reshape(-1, 2)
    d = np.linalg.solve(cam.K, np.c_[uv, np.ones(len(uv))].T).T @ cam.R
    o = cam.center
    axes = np.asarray(semi_axes)
    do, oo = d / axes, o / axes
    a, b, c = (do * do).sum(1), 2 * do @ oo, oo @ oo - 1
    disc = b * b - 4 * a * c
    t_head = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    a2, b2 = (d * d).sum(1), 2 * d @ o
    t_wall = (-b2 + np.sqrt(b2 * b2 - 4 * a2 * (o @ o - far**2))) / (2 * a2)
    hit = t_head < t_wall
    return o + np.minimum(t_head, t_wall)[:, None] * d, hit.reshape(cam.height, cam.width)


def _known_scene(seed: int = 0, height: int = 48, width: int = 64):
    rng = np.random.default_rng(seed)
    cams = []
    for az, el, f in [(-30, 5, 60), (-8, -3, 75), (12, 8, 52), (30, 0, 68)]:
        az, el = math.radians(az), math.radians(el)
        eye = 0.6 * np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
        w2c = look_at_w2c(eye, rng.normal(0, 0.01, 3), np.array([0.0, 1.0, 0.0]))
        cams.append(Camera(K=K, w2c=w2c, width=width, height=height))
    hits = [_raycast(c) for c in cams]
    world = [h[0] for h in hits]
    pairs = list(itertools.permutations(range(len(cams)), 2))
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("pts3d_1", "conf_1", "pts3d_2_in_1", "conf_2")}
    for i, j in pairs:
        scale = rng.uniform(0.5, 2.0)  # every pair has its own unknown scale, as DUSt3R's do
        for key, v in (("pts3d_1", i), ("pts3d_2_in_1", j)):
            pts = (world[v] @ cams[i].R.T + cams[i].t) * scale
            out[key].append((pts * (1 + rng.normal(0, 0.005, pts.shape))).reshape(height, width, 3))
        out["conf_1"].append(1 + np.exp(rng.uniform(0.5, 2.5, (height, width))))
        out["conf_2"].append(1 + np.exp(rng.uniform(0.5, 2.5, (height, width))))
    predictions = {k: np.stack(v) for k, v in out.items()}
    return cams, world, [h[1] for h in hits], pairs, predictions


def _angle(rotation: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1) / 2, -1, 1))))


@pytest.fixture(scope="module")
def known():
    cams, world, masks, pairs, predictions = _known_scene()
    result = align_free_cameras(predictions, pairs, len(cams), iterations=300, lr=0.01)
    return cams, world, masks, result


def test_free_alignment_recovers_poses_and_focal_lengths(known) -> None:
    cams, world, _, result = known
    truth = np.array([c.K[0, 0] for c in cams])
    focal_error = np.abs(result.focal / truth - 1)
    rel = [
        _angle(
            (result.c2w[i, :3, :3].T @ result.c2w[j, :3, :3]).T
            @ (cams[i].c2w[:3, :3].T @ cams[j].c2w[:3, :3])
        )
        for i, j in itertools.combinations(range(len(cams)), 2)
    ]
    # Up to the global similarity: Umeyama of the recovered points onto the true ones, then camera centres.
    s, rot, t = umeyama(torch.tensor(result.points.reshape(-1, 3)), torch.tensor(np.concatenate(world)))
    centres = (s * torch.tensor(result.c2w[:, :3, 3]) @ rot.T + t).numpy()
    centre_error = np.linalg.norm(centres - np.stack([c.center for c in cams]), axis=1)
    absolute = [_angle(rot.numpy() @ result.c2w[i, :3, :3] @ cams[i].R) for i in range(len(cams))]
    print(
        f"free alignment: focal error {100 * focal_error.max():.3f}% (init "
        f"{100 * np.abs(result.init_focal / truth - 1).max():.3f}%), relative rotation error max "
        f"{max(rel):.4f} deg, absolute {max(absolute):.4f} deg, centre error max "
        f"{1000 * centre_error.max():.2f} mm at 0.6 m"
    )
    assert focal_error.max() < 0.02
    assert max(rel) < 0.5 and max(absolute) < 0.5
    assert centre_error.max() < 0.01  # 1 cm at 0.6 m
    # The pointmaps are fused: every view's points lie on the true surface after the similarity.
    fused = s * torch.tensor(result.points.reshape(-1, 3)).double() @ rot.T + t
    assert float(np.median(np.linalg.norm(fused.numpy() - np.concatenate(world), axis=1))) < 0.01


def test_focal_from_a_pointmap_and_single_view_alignment() -> None:
    cams, _, _, _, predictions = _known_scene(seed=1)
    assert abs(estimate_focal(predictions["pts3d_1"][0]) / cams[0].K[0, 0] - 1) < 0.01
    row = 1  # pair (0, 2): view 0 paired with itself is all a single photo gives
    single = {k: v[row : row + 1] for k, v in predictions.items()}
    single["pts3d_2_in_1"], single["conf_2"] = single["pts3d_1"], single["conf_1"]
    result = align_free_cameras(single, [(0, 0)], 1, iterations=50)
    assert abs(result.focal[0] / cams[0].K[0, 0] - 1) < 0.02
    assert np.allclose(result.c2w[0], np.eye(4))


def test_head_frame_from_recovered_cameras(known) -> None:
    cams, _, masks, result = known
    centres, breadths = [], []
    for cam in cams:  # the 2D head a detector reports: projected centre, breadth at the centre's depth
        uv, depth = cam.project(np.zeros((1, 3)))
        centres.append(uv[0])
        breadths.append(cam.K[0, 0] * HEAD_BREADTH_M / depth[0])
    assert (
        abs(0.096 - CENTRE_BEHIND_SURFACE * HEAD_BREADTH_M) < 1e-9
    )  # the scene's face is where the frame expects
    frame = head_frame(result, np.array(centres), np.array(breadths), np.stack(masks).astype(np.float32))
    # The true head frame: origin at the head centre, +z the mean camera direction, +y up, metres.
    eyes = np.stack([c.center for c in cams])
    forward = (eyes / np.linalg.norm(eyes, axis=1, keepdims=True)).mean(0)
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0]) - forward[1] * forward
    up /= np.linalg.norm(up)
    true_h2w = np.eye(4)
    true_h2w[:3, :3] = np.stack([np.cross(up, forward), up, forward], axis=1)
    worst_angle, worst_offset = 0.0, 0.0
    for i, cam in enumerate(cams):
        truth = cam.w2c @ true_h2w
        got = frame.w2c_head(result.c2w[i])
        worst_angle = max(worst_angle, _angle(got[:3, :3] @ truth[:3, :3].T))
        worst_offset = max(worst_offset, float(np.linalg.norm(got[:3, 3] - truth[:3, 3])))
    print(
        f"head frame: rotation error {worst_angle:.3f} deg, "
        f"camera translation error {1000 * worst_offset:.1f} mm"
    )
    assert worst_angle < 1.0
    assert worst_offset < 0.03  # 3 cm of 0.6 m: the scale comes from the assumed head breadth


# ------------------------------------------------------------------------------------------------ photos


def test_exif_orientation_is_honoured(tmp_path) -> None:
    upright = synthetic_photo(240, 320, 0.2, seed=3)
    plain = load_photo(save_jpeg(tmp_path / "upright.jpg", upright))
    reference = detect_head(plain.rgb, plain.path)
    for orientation in (6, 8, 3):
        photo = load_photo(save_jpeg(tmp_path / f"tag{orientation}.jpg", upright, orientation))
        assert photo.orientation == orientation and photo.rgb.shape == upright.shape
        assert np.abs(photo.rgb.astype(int) - plain.rgb).mean() < 2.0  # JPEG noise only
        head = detect_head(photo.rgb, photo.path)
        assert np.allclose(head.centre, reference.centre, atol=2.0), orientation
        assert abs(head.width - reference.width) <= 2.0
        window, ref_window = dust3r_window(photo, head, 64), dust3r_window(plain, reference, 64)
        assert abs(window.width - ref_window.width) <= 2 and abs(window.x0 - ref_window.x0) <= 2
        crop = window.cut(photo.rgb, Image.Resampling.LANCZOS).astype(int)
        assert np.abs(crop - ref_window.cut(plain.rgb, Image.Resampling.LANCZOS)).mean() < 4.0  # same crop
    # Control: the same pixels without the tag are a sideways photo, with a different head.
    sideways = tmp_path / "sideways.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(sideways, format="JPEG", quality=95)
    loaded = load_photo(sideways)
    assert loaded.orientation == 1 and loaded.rgb.shape[:2] == upright.shape[:2][::-1]


def test_create_end_to_end_then_animate(files, tmp_path, caplog) -> None:
    out = tmp_path / "avatar"
    argv = [
        "create",
        "--config",
        CONFIG,
        "--images",
        *map(str, files["photos"]),
        "--model",
        str(files["model4"]),
    ]
    assert cli.main([*argv, "--out", str(out), *FAST]) == 0
    for name in ("avatar.pt", "avatar.json", "inputs.png", "preview.png"):
        assert (out / name).is_file(), name
    inputs, summary = load_created_avatar(out)
    assert inputs["input_rgb"].shape == (4, 3, 32, 32) and inputs["input_alpha"].shape == (4, 1, 32, 32)
    assert inputs["plucker"].shape == (4, 6, 32, 32) and inputs["position"].shape == (4, 3, 32, 32)
    assert inputs["confidence"].shape == (4, 1, 32, 32) and inputs["features"].shape == (4, 32, 4, 4)
    assert inputs["input_K"].shape == (4, 3, 3) and inputs["input_w2c"].shape == (4, 4, 4)
    for value in inputs.values():
        assert not isinstance(value, torch.Tensor) or bool(torch.isfinite(value).all())
    rotation = inputs["input_w2c"][:, :3, :3].double()
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3, dtype=torch.float64), atol=1e-5)
    assert float(inputs["input_alpha"].mean()) > 0.05  # the matte keeps the head
    assert bool((inputs["confidence"][inputs["input_alpha"] < 0.5] == 0).all())  # nothing on the background
    assert summary["random_weights"] == ["DUSt3R", "Sapiens"] and "RANDOM WEIGHTS" in summary["dust3r"]
    assert summary["exif_orientation"] == [1, 6, 1, 8]
    assert summary["photo_sizes"] == [[192, 256], [240, 320], [320, 240], [144, 192]]
    assert "RANDOM WEIGHTS" in caplog.text
    preview = np.asarray(Image.open(out / "preview.png"))
    assert preview.shape == (64, 128, 3)

    codes = np.random.default_rng(0).normal(size=(2, 256)).astype(np.float32)
    np.save(tmp_path / "codes.npy", codes)
    if imageio is not None:
        video = tmp_path / "drive.mp4"
        result = animate(
            files["model4"],
            None,
            video,
            avatar=out,
            expressions=tmp_path / "codes.npy",
            renderer="torch",
            device="cpu",
        )
        assert result["frames"] == 2 and result["size"] == [32, 32] and video.is_file()
        assert result["inputs"] == [str(p) for p in files["photos"]]
        assert len(imageio.mimread(video, format="FFMPEG")) == 2
        argv = ["animate", "--config", CONFIG, "--model", str(files["model4"]), "--avatar", str(out)]
        assert (
            cli.main(
                [
                    *argv,
                    "--expressions",
                    str(tmp_path / "codes.npy"),
                    "--camera",
                    "input1",
                    "--out",
                    str(tmp_path / "cli.mp4"),
                ]
            )
            == 0
        )
        assert (tmp_path / "cli_frames.png").is_file()
    with pytest.raises(AnimateError, match="no shard of expression codes"):
        animate(files["model4"], None, tmp_path / "x.mp4", avatar=out, renderer="torch", device="cpu")


def test_one_photo_with_a_single_view_model(files, tmp_path) -> None:
    options = CreateOptions(dust3r_resolution=64, iterations=10, device="cpu")
    summary = create_avatar(files["photos"][1:2], files["model1"], tmp_path / "one", options)
    inputs, _ = load_created_avatar(tmp_path / "one")
    assert summary["views"] == 1 and inputs["input_rgb"].shape == (1, 3, 32, 32)
    assert summary["alignment"]["pairs"] == 1


# ------------------------------------------------------------------------------------------------ bad input


def test_more_photos_than_views_names_the_files(files, tmp_path, capsys) -> None:
    photos = [str(p) for p in files["photos"]]
    with pytest.raises(
        CreateError, match=r"4 photos given .*phone0.jpg.* takes 1 input view.*leave out .*phone1"
    ):
        create_avatar(photos, files["model1"], tmp_path / "x")
    argv = ["create", "--config", CONFIG, "--images", *photos, photos[0], "--model", str(files["model4"])]
    assert cli.main([*argv, "--out", str(tmp_path / "y"), *FAST]) == 1
    err = capsys.readouterr().err
    assert (
        "avat3r create: error: 5 photos given" in err and "phone0.jpg" in err and "takes 4 input views" in err
    )


def test_a_photo_without_a_head_is_named(files, tmp_path) -> None:
    wall = np.clip(np.random.default_rng(0).normal(200, 2, (240, 180, 3)), 0, 255).astype(np.uint8)
    blank = save_jpeg(tmp_path / "wall.jpg", wall)
    tiny = synthetic_photo(180, 240)
    tiny[:] = tiny[0, 0]
    tiny[200:204, 80:84] = 0  # a speck, not a head
    speck = save_jpeg(tmp_path / "speck.jpg", tiny)
    for bad in (blank, speck):
        with pytest.raises(CreateError, match=rf"photo {bad}: no detectable head"):
            create_avatar(
                [files["photos"][0], bad], files["model4"], tmp_path / "x", CreateOptions(device="cpu")
            )


def test_an_unreadable_photo_is_named(files, tmp_path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(CreateError, match=rf"photo {broken} is not a readable image"):
        create_avatar([files["photos"][0], broken], files["model4"], tmp_path / "x")
    with pytest.raises(CreateError, match=r"photo .*missing.jpg does not exist"):
        create_avatar([tmp_path / "missing.jpg"], files["model4"], tmp_path / "x")

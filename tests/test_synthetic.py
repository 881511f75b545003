"""Tests of the synthetic Ava-256-layout capture generator: layout, conventions, ground truth, rasteriser."""

from __future__ import annotations

import csv
import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData
from scipy.spatial import cKDTree

from avat3r_core.capture import open_capture
from avat3r_core.capture.synthetic import (
    BLEND_WEIGHT_NAMES,
    SyntheticConfig,
    decode_blend_weights,
    generate_synthetic_capture,
    image_size,
    synthetic_capture_folder,
    synthetic_subject_ids,
)
from avat3r_core.config import validate_sections
from avat3r_core.geometry.raster import rasterize

CFG = SyntheticConfig(n_subjects=2, n_cameras=6, frames_per_segment=2, downsample=32, seed=3)
NATIVE_W, NATIVE_H = 2668, 4096
DEPTH_TOLERANCE_MM = 0.5
"""Unprojected tracked pixels must lie this close to the tracked mesh (triangles ~4-9 mm across)."""


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_capture(base / "capture", base / "gt", CFG, workers=2, progress=False, tracking=True)
    return base / "capture", base / "gt"


def _decoder(root: Path, sid: str) -> Path:
    return root / synthetic_capture_folder(CFG, sid) / "decoder"


def _calibration(root: Path, sid: str) -> list[dict]:
    return json.loads((_decoder(root, sid) / "camera_calibration.json").read_text())["KRT"]


def _frames(root: Path, sid: str) -> list[tuple[str, int]]:
    with open(_decoder(root, sid) / "frame_list.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["seg_id", "frame_id"]
    return [(seg, int(f)) for seg, f in rows[1:]]


def _read_avif(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _load_obj_faces(root: Path) -> np.ndarray:
    faces = [
        [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
        for line in (root / "face_topology.obj").read_text().splitlines()
        if line.startswith("f ")
    ]
    return np.asarray(faces)


def _ply_vertices(root: Path, sid: str, frame: int) -> np.ndarray:
    with zipfile.ZipFile(_decoder(root, sid) / "kinematic_tracking" / "registration_vertices.zip") as zf:
        data = PlyData.read(io.BytesIO(zf.read(f"{frame:06d}.ply")))["vertex"].data
    return np.stack([data["x"], data["y"], data["z"]], -1).astype(np.float64)


def _head_pose_mm(root: Path, sid: str, frame: int) -> np.ndarray:
    with zipfile.ZipFile(_decoder(root, sid) / "head_pose" / "head_pose.zip") as zf:
        rt = np.loadtxt(io.BytesIO(zf.read(f"{frame:06d}.txt")))
    return np.vstack([rt, [0, 0, 0, 1]])


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(verts)
    for k in range(3):
        np.add.at(out, faces[:, k], fn)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------------------- pure API


def test_image_size_rounding() -> None:
    assert image_size(16) == (256, 167)  # 2668 / 16 = 166.75 -> 167
    assert image_size(4) == (1024, 667)  # the 4TB release
    assert image_size(1) == (4096, 2668)
    assert image_size(8) == (512, 334)  # 333.5 rounds half UP (Python's round() would give 334 too: even)
    assert image_size(24)[1] == 111  # 111.17


def test_subject_ids_and_folders_are_pure() -> None:
    ids = synthetic_subject_ids(SyntheticConfig(n_subjects=30))
    assert len(set(ids)) == 30 and ids[:2] == ["AAA001", "AAB002"]
    assert all(re.fullmatch(r"[A-Z]{3}\d{3}", s) for s in ids)
    for sid in ids:
        assert re.fullmatch(
            rf"\d{{8}}--\d{{4}}--{sid}", synthetic_capture_folder(SyntheticConfig(n_subjects=30), sid)
        )


# ---------------------------------------------------------------------------------------------- layout


def test_layout_files_and_members(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    with open(root / "256_ids.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["mcd", "sid", "mct"]
    assert [r["sid"] for r in rows] == synthetic_subject_ids(CFG)
    obj = (root / "face_topology.obj").read_text().splitlines()
    assert any(line.startswith("vt ") for line in obj) and any(line.startswith("f ") for line in obj)
    for row in rows:
        sid = row["sid"]
        assert synthetic_capture_folder(CFG, sid) == f"{row['mcd']}--{row['mct']}--{sid}"
        dec = _decoder(root, sid)
        frames = _frames(root, sid)
        frame_ids = [f for _, f in frames]
        assert len(frames) == len(CFG.segments) * CFG.frames_per_segment
        assert (
            frame_ids == sorted(frame_ids)
            and len(set(np.diff(frame_ids))) > 1
            and min(np.diff(frame_ids)) >= 4
        )
        assert [s for s, _ in frames[:: CFG.frames_per_segment]] == list(CFG.segments)
        cams = [k["cameraId"] for k in _calibration(root, sid)]
        meta = json.loads((gt / sid / "meta.json").read_text())
        missing = {(c, f) for c, f in meta["missing"]}
        expected = {f"{f:06d}.txt" for f in frame_ids}
        for path in [dec / "head_pose" / "head_pose.zip"]:
            assert set(zipfile.ZipFile(path).namelist()) == expected
        ply_zip = zipfile.ZipFile(dec / "kinematic_tracking" / "registration_vertices.zip")
        assert set(ply_zip.namelist()) == {f"{f:06d}.ply" for f in frame_ids}
        bg = zipfile.ZipFile(dec / "background_image" / "background_image.zip")
        assert sorted(bg.namelist()) == [f"{c}.avif" for c in cams]
        for cam in cams:
            images = zipfile.ZipFile(dec / "image" / f"cam{cam}.zip")
            masks = zipfile.ZipFile(dec / "foreground_masks" / f"cam{cam}.zip")
            present = [f for f in frame_ids if (cam, f) not in missing]
            assert sorted(images.namelist()) == [f"cam{cam}/{f:06d}.avif" for f in present]
            assert sorted(masks.namelist()) == [f"{f:06d}.avif" for f in present]
            assert all(i.compress_type == zipfile.ZIP_STORED for i in images.infolist() + masks.infolist())
        codes = pickle.loads((dec / "expression_codes" / "aeparams_1440000.pkl").read_bytes())
        assert sorted(codes) == frame_ids and all(type(k) is int for k in codes)
        assert all(v.dtype == np.float32 and v.shape == (256,) for v in codes.values())
        for name in ["cameras.npz", "head_pose.npz", "blend_weights.npy"] + [f"cam{c}.npz" for c in cams]:
            assert (gt / sid / name).is_file(), name
        assert meta["camera_ids"] == cams and meta["frame_ids"] == frame_ids
        assert meta["image_size"] == list(image_size(CFG.downsample))
        assert meta["blend_weight_names"] == list(BLEND_WEIGHT_NAMES)


def test_calibration_json_is_transposed_mm_native(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    height, width = image_size(CFG.downsample)
    for sid in synthetic_subject_ids(CFG):
        krt = _calibration(root, sid)
        cams = np.load(gt / sid / "cameras.npz")
        ids = [k["cameraId"] for k in krt]
        assert (
            ids == sorted(ids) and len(set(ids)) == len(ids) and all(re.fullmatch(r"\d{6}", c) for c in ids)
        )
        assert list(cams["camera_ids"]) == ids
        for c, item in enumerate(krt):
            assert item["projectionModel"] == "Pinhole" and item["distortionModel"] == "RadialAndTangential"
            assert item["distortion"] == [0, 0, 0, 0]
            k_native = np.array(item["K"]).T
            t_json = np.array(item["T"])
            assert np.allclose(t_json[:3, 3], 0) and t_json[3, 3] == 1  # last row of the json T is [t, 1]
            w2c_mm = t_json.T
            assert np.allclose(k_native[2], [0, 0, 1]) and abs(k_native[0, 2] - NATIVE_W / 2) < 100
            scaled = np.diag([width / NATIVE_W, height / NATIVE_H, 1.0]) @ k_native
            np.testing.assert_allclose(scaled, cams["K"][c], atol=1e-6)
            w2c_m = w2c_mm.copy()
            w2c_m[:3, 3] /= 1000.0
            np.testing.assert_allclose(w2c_m, cams["w2c"][c], atol=1e-6)
            centre_mm = -w2c_mm[:3, :3].T @ w2c_mm[:3, 3]
            assert 950 < np.linalg.norm(centre_mm - [-60.0, 30.0, 990.0]) < 1350  # dome radius 1-1.3 m


def test_images_masks_plates_decode(capture: tuple[Path, Path]) -> None:
    root, _ = capture
    height, width = image_size(CFG.downsample)
    sid = synthetic_subject_ids(CFG)[0]
    dec = _decoder(root, sid)
    cam = _calibration(root, sid)[0]["cameraId"]
    images = zipfile.ZipFile(dec / "image" / f"cam{cam}.zip")
    image = _read_avif(images.read(images.namelist()[0]))
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    masks = zipfile.ZipFile(dec / "foreground_masks" / f"cam{cam}.zip")
    mask = _read_avif(masks.read(masks.namelist()[0]))
    assert mask.shape == (height, width)
    plate = _read_avif(zipfile.ZipFile(dec / "background_image" / "background_image.zip").read(f"{cam}.avif"))
    assert plate.shape == (height, width, 3) and plate.mean() > 20  # a dome, not black
    # The image equals the plate where the mask is background (up to noise and compression).
    background = mask < 128
    assert np.abs(image[background].astype(int) - plate[background]).mean() < 6


def test_missing_images_recorded_and_absent(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    for sid in synthetic_subject_ids(CFG):
        meta = json.loads((gt / sid / "meta.json").read_text())
        missing = meta["missing"]
        assert len(missing) >= CFG.min_missing
        dec = _decoder(root, sid)
        n_cams = len(meta["camera_ids"])
        for cam, frame in missing:
            assert (
                f"cam{cam}/{frame:06d}.avif"
                not in zipfile.ZipFile(dec / "image" / f"cam{cam}.zip").namelist()
            )
            assert (
                f"{frame:06d}.avif"
                not in zipfile.ZipFile(dec / "foreground_masks" / f"cam{cam}.zip").namelist()
            )
        per_frame = {f: sum(1 for _, g in missing if g == f) for _, f in missing}
        assert max(per_frame.values()) < n_cams
        # Ground truth still covers the dropped images.
        cam, frame = missing[0]
        alpha = np.load(gt / sid / f"cam{cam}.npz")["alpha"]
        assert alpha.shape[0] == len(meta["frame_ids"]) and alpha[meta["frame_ids"].index(frame)].any()


def test_masks_match_true_alpha(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    for sid in synthetic_subject_ids(CFG):
        meta = json.loads((gt / sid / "meta.json").read_text())
        for cam in meta["camera_ids"]:
            alpha = np.load(gt / sid / f"cam{cam}.npz")["alpha"]
            assert set(np.unique(alpha)) <= {0, 255}
            masks = zipfile.ZipFile(_decoder(root, sid) / "foreground_masks" / f"cam{cam}.zip")
            for name in masks.namelist():
                f = meta["frame_ids"].index(int(name[:6]))
                decoded = _read_avif(masks.read(name)) >= 128
                truth = alpha[f] == 255
                iou = (decoded & truth).sum() / max((decoded | truth).sum(), 1)
                assert iou > 0.98, (sid, cam, name, iou)


# ---------------------------------------------------------------------------------------------- geometry


def test_tracked_vertices_project_inside_alpha(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    faces = _load_obj_faces(root)
    for sid in synthetic_subject_ids(CFG):
        cams = np.load(gt / sid / "cameras.npz")
        meta = json.loads((gt / sid / "meta.json").read_text())
        inside = total = 0
        for f, frame in enumerate(meta["frame_ids"][::3]):
            verts = _ply_vertices(root, sid, frame)
            pose = _head_pose_mm(root, sid, frame)
            world = (verts @ pose[:3, :3].T + pose[:3, 3]) / 1000.0
            normals = _vertex_normals(verts, faces) @ pose[:3, :3].T
            used = np.zeros(len(verts), dtype=bool)
            used[faces.ravel()] = True
            for c, cam in enumerate(meta["camera_ids"]):
                # The silhouette is point-sampled at pixel centres, so a vertex on it may fall in a boundary
                # pixel whose centre is outside: allow one pixel of slack (a 3x3 dilation of the alpha).
                alpha = np.pad(np.load(gt / sid / f"cam{cam}.npz")["alpha"][3 * f], 1)
                alpha = np.max(
                    [np.roll(alpha, (di, dj), (0, 1)) for di in (-1, 0, 1) for dj in (-1, 0, 1)], 0
                )
                alpha = alpha[1:-1, 1:-1]
                w2c, k = cams["w2c"][c], cams["K"][c]
                centre = -w2c[:3, :3].T @ w2c[:3, 3]
                facing = used & (np.einsum("nk,nk->n", normals, centre - world) > 0)
                pc = world[facing] @ w2c[:3, :3].T + w2c[:3, 3]
                uv = pc @ k.T
                u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
                i, j = np.floor(v).astype(int), np.floor(u).astype(int)
                ok = (i >= 0) & (i < alpha.shape[0]) & (j >= 0) & (j < alpha.shape[1])
                inside += int((alpha[i[ok], j[ok]] == 255).sum())
                total += len(u)
        assert inside >= 0.99 * total, (sid, inside, total)


def _closest_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Distance from each point to the mesh, via the 64 triangles with the nearest centroids: the point's
    projection onto a triangle's plane counts where it falls inside the triangle (barycentric test)."""
    tri = verts[faces]
    tree = cKDTree(tri.mean(1))
    _, cand = tree.query(points, k=64)
    t = tri[cand]  # (P, 24, 3, 3)
    e1, e2 = t[:, :, 1] - t[:, :, 0], t[:, :, 2] - t[:, :, 0]
    n = np.cross(e1, e2)
    n_len = np.linalg.norm(n, axis=-1)
    n_unit = n / np.maximum(n_len, 1e-12)[..., None]
    rel = points[:, None] - t[:, :, 0]
    dist = np.einsum("pck,pck->pc", rel, n_unit)
    proj = rel - dist[..., None] * n_unit
    d00, d01, d11 = (np.einsum("pck,pck->pc", a, b) for a, b in ((e1, e1), (e1, e2), (e2, e2)))
    d20, d21 = np.einsum("pck,pck->pc", proj, e1), np.einsum("pck,pck->pc", proj, e2)
    denom = d00 * d11 - d01 * d01
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = (d11 * d20 - d01 * d21) / denom
        b2 = (d00 * d21 - d01 * d20) / denom
    inside = (b1 >= -1e-6) & (b2 >= -1e-6) & (b1 + b2 <= 1 + 1e-6) & (n_len > 1e-9)
    return np.where(inside, np.abs(dist), np.inf).min(axis=1)


def test_depth_unprojects_onto_tracked_mesh(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    faces = _load_obj_faces(root)
    sid = synthetic_subject_ids(CFG)[1]
    cams = np.load(gt / sid / "cameras.npz")
    meta = json.loads((gt / sid / "meta.json").read_text())
    worst, count = 0.0, 0
    for f in (0, 3, 7):  # eye-wide, tongue and jaw frames
        frame = meta["frame_ids"][f]
        verts = _ply_vertices(root, sid, frame)
        pose = _head_pose_mm(root, sid, frame)
        for c, cam in enumerate(meta["camera_ids"]):
            data = np.load(gt / sid / f"cam{cam}.npz")
            tracked, depth = data["tracked"][f], data["depth"][f].astype(np.float64)
            assert (depth[tracked] > 0).all() and (data["alpha"][f][tracked] == 255).all()
            i, j = np.nonzero(tracked)
            rays = (
                np.stack([j + 0.5, i + 0.5, np.ones_like(i, dtype=float)], -1) @ np.linalg.inv(cams["K"][c]).T
            )
            cam_pts = rays * depth[i, j][:, None]
            w2c = cams["w2c"][c]
            world_mm = (cam_pts - w2c[:3, 3]) @ w2c[:3, :3] * 1000.0
            local = (world_mm - pose[:3, 3]) @ pose[:3, :3]
            dist = _closest_distance(local, verts, faces)
            worst, count = max(worst, float(dist.max())), count + len(dist)
    assert count > 500
    assert worst < DEPTH_TOLERANCE_MM, worst


def _brute_force(verts: np.ndarray, faces: np.ndarray, k: np.ndarray, h: int, w: int, cull: bool):
    """Per-pixel ray/triangle intersection (Moller-Trumbore) through the pixel centres, nearest hit wins."""
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([jj, ii, np.ones_like(jj)], -1).reshape(-1, 3) @ np.linalg.inv(k).T  # z = 1: t is depth
    best = np.full(len(rays), np.inf)
    face = np.full(len(rays), -1)
    for m, (p0, p1, p2) in enumerate(verts[faces]):
        e1, e2 = p1 - p0, p2 - p0
        if cull and np.cross(e1, e2) @ p0 >= 0:
            continue
        h_ = np.cross(rays, e2)
        a = h_ @ e1
        s = -p0
        q = np.cross(s, e1)
        with np.errstate(divide="ignore", invalid="ignore"):
            b1 = (h_ @ s) / a
            b2 = (rays @ q) / a
            t = (q @ e2) / a
        hit = (np.abs(a) > 1e-15) & (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1) & (t > 0) & (t < best)
        best[hit], face[hit] = t[hit], m
    return face.reshape(h, w), np.where(face >= 0, best, 0.0).reshape(h, w)


@pytest.mark.parametrize("cull", [False, True])
def test_rasterizer_matches_brute_force(cull: bool) -> None:
    rng = np.random.default_rng(7)
    k = np.array([[41.0, 0.0, 17.3], [0.0, 40.0, 23.9], [0.0, 0.0, 1.0]])
    for _ in range(4):
        verts = rng.uniform([-0.6, -0.8, 2.0], [0.6, 0.8, 4.0], size=(60, 3))
        faces = rng.permutation(60).reshape(20, 3)
        result = rasterize(verts, faces, k, 48, 34, cull_backfaces=cull)
        face, depth = _brute_force(verts, faces, k, 48, 34, cull)
        assert (face >= 0).sum() > 50
        np.testing.assert_array_equal(result.face_id, face)
        np.testing.assert_allclose(result.depth, depth, atol=1e-5)
        # Perspective-correct barycentrics reproduce the 3D hit point.
        i, j = np.nonzero(face >= 0)
        hit = np.einsum("pk,pkc->pc", result.bary[i, j].astype(np.float64), verts[faces[face[i, j]]])
        ray = np.stack([j + 0.5, i + 0.5, np.ones_like(i, dtype=float)], -1) @ np.linalg.inv(k).T
        np.testing.assert_allclose(hit, ray * depth[i, j][:, None], atol=1e-5)


# ---------------------------------------------------------------------------------------------- content


def test_expression_codes_decode_to_blend_weights(capture: tuple[Path, Path]) -> None:
    root, gt = capture
    for sid in synthetic_subject_ids(CFG):
        codes = pickle.loads((_decoder(root, sid) / "expression_codes" / "aeparams_1440000.pkl").read_bytes())
        weights = np.load(gt / sid / "blend_weights.npy")
        frames = [f for _, f in _frames(root, sid)]
        decoded = decode_blend_weights(np.stack([codes[f] for f in frames]))
        assert decoded.shape == weights.shape == (len(frames), len(BLEND_WEIGHT_NAMES))
        np.testing.assert_allclose(decoded, weights, atol=0.03)
        np.testing.assert_allclose(decode_blend_weights(codes[frames[0]]), weights[0], atol=0.03)
        jaw = weights[:, BLEND_WEIGHT_NAMES.index("jaw_open")]
        assert jaw.max() > 0.3  # the jaw segments open the mouth


def test_flame_codes_are_the_blend_weights(capture: tuple[Path, Path]) -> None:
    # synthetic.tracking: GAGAvatar-format FLAME codes, read back through the flame_gagavatar source as
    # configs/flame_codes.yaml sets it up; expression = blend weights then zeros, jaw and eyes zero
    root, gt = capture
    section = {
        "dataset": "ava256",
        "root": str(root),
        "expression_source": "flame_gagavatar",
        "flame_tracking": "{root}/gagavatar/{subject}/optim.pkl",
        "flame_video": "{segment}",
    }
    for sid in synthetic_subject_ids(CFG):
        reader = open_capture(validate_sections({"capture": section})["capture"], sid)
        assert reader.expression_source == "flame_gagavatar"
        weights = np.load(gt / sid / "blend_weights.npy")
        frames = [f for _, f in _frames(root, sid)]
        codes = np.stack([reader.expression_code(f) for f in frames])
        assert codes.shape == (len(frames), 109)
        np.testing.assert_array_equal(codes[:, : len(BLEND_WEIGHT_NAMES)], weights)
        assert not codes[:, len(BLEND_WEIGHT_NAMES) :].any()


def test_head_moves_and_cameras_surround_it(capture: tuple[Path, Path]) -> None:
    _, gt = capture
    for sid in synthetic_subject_ids(CFG):
        poses = np.load(gt / sid / "head_pose.npz")["head_to_world"]
        rel = np.einsum("ij,fjk->fik", poses[0, :3, :3].T, poses[:, :3, :3])
        angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        assert angles.max() > 3.0 and angles.max() < 45.0
        shift = np.linalg.norm(poses[:, :3, 3] - poses[0, :3, 3], axis=1)
        assert 0.003 < shift.max() < 0.15
        assert np.linalg.norm(poses[:, :3, 3].mean(0)) > 0.8  # the head is ~1 m from the world origin
        cams = np.load(gt / sid / "cameras.npz")
        centres = -np.einsum("cji,cj->ci", cams["w2c"][:, :3, :3], cams["w2c"][:, :3, 3])
        forward = poses[0, :3, :3] @ np.array([0.0, 0.0, 1.0])
        to_cam = centres - poses[0, :3, 3]
        cosine = to_cam @ forward / np.linalg.norm(to_cam, axis=1)
        assert np.degrees(np.arccos(cosine)).max() > 100.0  # some cameras see the back of the head
        assert np.degrees(np.arccos(cosine)).min() < 60.0


def test_generation_is_deterministic(tmp_path: Path) -> None:
    cfg = SyntheticConfig(n_subjects=1, n_cameras=3, frames_per_segment=1, downsample=64, min_missing=1)
    generate_synthetic_capture(tmp_path / "a", tmp_path / "ga", cfg, workers=1, progress=False)
    generate_synthetic_capture(tmp_path / "b", tmp_path / "gb", cfg, workers=2, progress=False)
    sid = synthetic_subject_ids(cfg)[0]
    folder = synthetic_capture_folder(cfg, sid)
    cam = json.loads((tmp_path / "a" / folder / "decoder" / "camera_calibration.json").read_text())["KRT"][0]
    for rel in [
        f"{folder}/decoder/image/cam{cam['cameraId']}.zip",
        f"{folder}/decoder/kinematic_tracking/registration_vertices.zip",
        f"{folder}/decoder/camera_calibration.json",
        f"{folder}/decoder/background_image/background_image.zip",
    ]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    name = f"{sid}/cam{cam['cameraId']}.npz"
    assert (tmp_path / "ga" / name).read_bytes() == (tmp_path / "gb" / name).read_bytes()


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch) -> None:
    """A crash mid-render must not leave a capture folder at its final path (a rerun would trust it)."""
    from avat3r_core.capture.synthetic import writer

    def crash(*args, **kwargs):
        raise RuntimeError("killed")
        yield  # pragma: no cover - makes this a generator like the real one

    monkeypatch.setattr(writer, "_run_jobs", crash)
    cfg = SyntheticConfig(n_subjects=1, n_cameras=4, frames_per_segment=1, downsample=64)
    with pytest.raises(RuntimeError, match="killed"):
        generate_synthetic_capture(tmp_path / "capture", tmp_path / "gt", cfg, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

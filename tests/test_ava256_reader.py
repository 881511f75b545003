"""The Ava-256 reader against the synthetic ground truth (the generator writes the release bytes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avat3r_core.capture import open_capture, subject_ids
from avat3r_core.capture.ava256 import Ava256Capture, select_subjects
from avat3r_core.errors import ConfigError, MissingImageError
from avat3r_core.stages.capture_index import build_capture_index


@pytest.fixture(scope="module")
def reader(synthetic_capture) -> Ava256Capture:
    return Ava256Capture(synthetic_capture.root, synthetic_capture.subjects[0])


@pytest.fixture(scope="module")
def truth(synthetic_capture) -> dict:
    gt = synthetic_capture.groundtruth / synthetic_capture.subjects[0]
    cameras = np.load(gt / "cameras.npz")
    poses = np.load(gt / "head_pose.npz")
    return {
        "meta": json.loads((gt / "meta.json").read_text()),
        "camera_ids": [str(c) for c in cameras["camera_ids"]],
        "K": cameras["K"],
        "w2c": cameras["w2c"],
        "frames": [int(f) for f in poses["frame_ids"]],
        "head_to_world": poses["head_to_world"],
        "dir": gt,
    }


def test_cameras_match_the_generator_to_1e6(reader: Ava256Capture, truth: dict) -> None:
    cameras = reader.cameras()
    assert sorted(cameras) == sorted(truth["camera_ids"])
    height, width = reader.image_size()
    for index, camera_id in enumerate(truth["camera_ids"]):
        camera = cameras[camera_id]
        assert (camera.height, camera.width) == (height, width)
        np.testing.assert_allclose(camera.K, truth["K"][index], rtol=0, atol=1e-6)
        np.testing.assert_allclose(camera.w2c, truth["w2c"][index], rtol=0, atol=1e-6)


def test_head_poses_match_the_generator_to_1e6(reader: Ava256Capture, truth: dict) -> None:
    assert [f.frame for f in reader.frames()] == truth["frames"]
    for frame, expected in zip(truth["frames"], truth["head_to_world"], strict=True):
        np.testing.assert_allclose(reader.head_pose(frame), expected, rtol=0, atol=1e-6)


def test_timeline_segments_and_codes(reader: Ava256Capture) -> None:
    segments = reader.segments()
    assert {"EXP_eye_wide", "EXP_tongue001", "EXP_jaw003", "EXP_neutral_peak", "EXP_free_face"} <= set(
        segments
    )
    frames = [f.frame for f in reader.frames()]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    code = reader.expression_code(frames[0])
    assert code.shape == (256,) and code.dtype == np.float32


def test_missing_images_are_reported_not_fatal(reader: Ava256Capture, truth: dict) -> None:
    missing = reader.missing_images()
    assert sorted(map(tuple, missing)) == sorted((str(c), int(f)) for c, f in truth["meta"]["missing"])
    assert len(missing) >= 3
    camera, frame = missing[0]
    assert not reader.has_image(camera, frame)
    with pytest.raises(MissingImageError) as caught:
        reader.image(camera, frame)
    assert f"subject {reader.subject}, camera {camera}, frame {frame}" in str(caught.value)


def test_images_plates_and_masks_decode_at_the_release_size(reader: Ava256Capture) -> None:
    camera = reader.camera_ids[0]
    frame = next(f.frame for f in reader.frames() if reader.has_image(camera, f.frame))
    height, width = reader.image_size()
    assert reader.image(camera, frame).shape == (height, width, 3)
    assert reader.background(camera).shape == (height, width, 3)
    mask = reader.mask(camera, frame)
    assert mask.shape == (height, width) and mask.dtype == np.uint8


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    face_normals = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def test_tracked_mesh_projects_inside_the_true_mask(reader: Ava256Capture, truth: dict) -> None:
    """>= 99% of the tracked-mesh vertices that face a camera land inside the true foreground.

    "Facing" means a normal within 78 degrees of the direction to the camera (cosine > 0.2): vertices at
    grazing angles lie on the silhouette, where pixel-centre sampling puts half of them one pixel outside.
    """
    faces = reader.mesh_faces()
    inside = total = 0
    for frame in truth["frames"][::3]:
        vertices = reader.tracked_mesh(frame)
        used = np.unique(faces)
        normals = _vertex_normals(vertices, faces)
        for camera_id in reader.camera_ids:
            alpha = np.load(truth["dir"] / f"cam{camera_id}.npz")["alpha"][truth["frames"].index(frame)]
            camera = reader.head_centric_camera(camera_id, frame)
            to_camera = camera.center - vertices[used]
            to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
            facing = used[np.einsum("ij,ij->i", normals[used], to_camera) > 0.2]
            uv, depth = camera.project(vertices[facing])
            assert (depth > 0).all()
            col, row = np.floor(uv).astype(int).T
            valid = (row >= 0) & (row < camera.height) & (col >= 0) & (col < camera.width)
            hits = np.zeros(len(facing), dtype=bool)
            hits[valid] = alpha[row[valid], col[valid]] > 127
            inside += int(hits.sum())
            total += len(facing)
    assert total > 1000
    assert inside / total >= 0.99, f"{inside}/{total} facing vertices inside the mask"


def test_subject_selection_and_discovery(synthetic_capture) -> None:
    config = {"capture": synthetic_capture.capture_section() | {"subjects": [], "max_subjects": None}}
    assert subject_ids(config) == synthetic_capture.subjects
    config["capture"]["max_subjects"] = 1
    assert subject_ids(config) == synthetic_capture.subjects[:1]
    assert select_subjects(["A1", "B2", "C3"], ["C3", "A1"], None) == ["A1", "C3"]
    with pytest.raises(ConfigError, match=r"capture\.subjects.*not in the capture: ZZZ999"):
        select_subjects(["A1"], ["ZZZ999"], None)


def test_capture_index_content(synthetic_capture, truth: dict) -> None:
    reader = open_capture(synthetic_capture.capture_section(), synthetic_capture.subjects[0])
    index = build_capture_index(reader)
    assert index["subject"] == synthetic_capture.subjects[0]
    assert len(index["cameras"]) == len(truth["camera_ids"])
    assert [f for f, _ in index["frames"]] == truth["frames"]
    np.testing.assert_allclose(
        index["head_to_world"][str(truth["frames"][1])], truth["head_to_world"][1], atol=1e-9
    )
    assert sorted(map(tuple, index["missing_images"])) == sorted(
        (str(c), int(f)) for c, f in truth["meta"]["missing"]
    )
    assert index["frames_without_mesh"] == []
    json.dumps(index)  # serialisable as is

"""AKD and CSIM (avat3r_core.metrics.face) against independent computations, with tiny stand-in networks
written in the official file formats: a TorchScript archive with FAN's signature (N x 3 x 256 x 256 ->
N x 68 x 64 x 64) whose heatmaps peak where the image has bright dots, and ONNX models with ArcFace's
signature (N x 3 x 112 x 112 -> N x 512) computing a fixed pooled linear projection."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avat3r_core.errors import Avat3rError
from avat3r_core.metrics.face import (
    ARCFACE_TEMPLATE,
    FaceMetricResult,
    FaceModelError,
    align_faces,
    box_from_landmarks,
    central_boxes,
    decode_heatmaps,
    face_metrics,
    five_points,
    load_identity_model,
    load_landmark_model,
    similarity_transform,
)

# The tiny FAN: heatmap k is the red channel, 4x4 average-pooled to 64 x 64, inside region k of a grid of
# 9 x 8 cells of 7 x 8 heatmap pixels (cell k: columns 7 (k % 9) ..., rows 8 (k // 9) ...).
COLS, CELL_W, CELL_H = 9, 7, 8


class _TinyFAN(torch.nn.Module):
    def __init__(self, points: int = 68) -> None:
        super().__init__()
        masks = torch.zeros(points, 64, 64)
        for k in range(points):
            col, row = k % COLS, k // COLS
            masks[k, row * CELL_H : (row + 1) * CELL_H, col * CELL_W : (col + 1) * CELL_W] = 1.0
        self.register_buffer("masks", masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :1], 4) * self.masks


def _save_torchscript(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(module, torch.zeros(1, 3, 256, 256)).save(str(path))
    return path


@pytest.fixture(scope="module")
def fan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_torchscript(_TinyFAN(), tmp_path_factory.mktemp("fan") / "2DFAN4_tiny.zip")


def _onnx_arcface(
    path: Path, weight: np.ndarray, *, size: int = 112, batch: int | str = "N", pool: int = 14
) -> Path:
    """input (batch, 3, size, size) -> AveragePool(pool) -> Flatten -> MatMul(weight) -> (batch, D)."""
    onnx = pytest.importorskip("onnx")  # the test extra installs it; only the ONNX tests need it
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    cells = size // pool
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["input.1"], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weight"], ["683"]),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "weight")],
    )
    assert weight.shape[0] == 3 * cells * cells
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


WEIGHT = np.random.default_rng(7).standard_normal((3 * 8 * 8, 512))


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _onnx_arcface(tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx", WEIGHT)


def _embed_numpy(aligned: np.ndarray) -> np.ndarray:
    """The tiny ArcFace in numpy: insightface's (255 x - 127.5) / 127.5, 14 x 14 mean pool, projection."""
    blob = (aligned * 255.0 - 127.5) / 127.5
    n = blob.shape[0]
    pooled = blob.reshape(n, 3, 8, 14, 8, 14).mean(axis=(3, 5))
    return pooled.reshape(n, -1) @ WEIGHT


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# -- dot images for the tiny FAN -----------------------------------------------------------------------------


def _cells(rng: np.random.Generator) -> np.ndarray:
    """One heatmap cell (x, y) per landmark inside its region, away from the region's right/bottom edge."""
    cells = np.zeros((68, 2), dtype=int)
    for k in range(68):
        col, row = k % COLS, k // COLS
        cells[k] = [col * CELL_W + rng.integers(0, CELL_W - 1), row * CELL_H + rng.integers(0, CELL_H - 1)]
    return cells


def _dots(cells: np.ndarray, right: np.ndarray, factor: int) -> torch.Tensor:
    """A (3, 64 factor, 64 factor) image: a 4 factor block of red 1.0 per cell, and where `right` is set a
    0.5 block on the cell's right neighbour (the heatmap's quarter-pixel shift)."""
    side = 4 * factor
    image = torch.zeros(3, 64 * side, 64 * side)
    for (x, y), shifted in zip(cells, right, strict=True):
        image[0, y * side : (y + 1) * side, x * side : (x + 1) * side] = 1.0
        if shifted:
            image[0, y * side : (y + 1) * side, (x + 1) * side : (x + 2) * side] = 0.5
    image[1:] = 0.25  # green and blue: ignored by the tiny FAN
    return image


def _expected_points(cells: np.ndarray, right: np.ndarray, factor: int) -> np.ndarray:
    """Where the landmarks must land when the crop square is the whole image: heatmap pixel x covers image
    pixels [4 factor x, 4 factor (x + 1)), whose centre is at 4 factor x + (4 factor - 1) / 2; the quarter
    shift (only off the heatmap border) moves it by factor image pixels."""
    side = 4 * factor
    shift = np.where(
        right & (cells[:, 0] > 0) & (cells[:, 0] < 63) & (cells[:, 1] > 0) & (cells[:, 1] < 63), 1, 0
    )
    x = side * cells[:, 0] + (side - 1) / 2 + factor * shift
    y = side * cells[:, 1] + (side - 1) / 2
    return np.stack([x, y], axis=-1)


def _full_image_box(size: int) -> torch.Tensor:
    """The face box whose face-alignment crop square is exactly the image [-0.5, size - 0.5]^2: a square box
    of side b with 200 (2 b) / 195 = size, centred 0.12 b below the image centre."""
    b = size * 195 / 400
    c = (size - 1) / 2
    return torch.tensor(
        [[c - b / 2, c + 0.12 * b - b / 2, c + b / 2, c + 0.12 * b + b / 2]], dtype=torch.float64
    )


# -- AKD -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2])
def test_akd_is_the_hand_computed_mean_landmark_distance(fan_file: Path, factor: int) -> None:
    rng = np.random.default_rng(factor)
    cells_t, cells_p = _cells(rng), _cells(rng)
    right_t, right_p = rng.random(68) < 0.5, rng.random(68) < 0.5
    cells_t[0] = [0, 3]  # on the heatmap border: no quarter shift even with a brighter neighbour
    right_t[0] = True
    target = _dots(cells_t, right_t, factor)[None]
    pred = _dots(cells_p, right_p, factor)[None]
    box = _full_image_box(target.shape[-1])

    model = load_landmark_model(fan_file)
    expected_t = _expected_points(cells_t, right_t, factor)
    np.testing.assert_allclose(model.predict(target, box)[0].numpy(), expected_t, atol=1e-9)
    expected_p = _expected_points(cells_p, right_p, factor)
    distance = np.linalg.norm(expected_p - expected_t, axis=-1).mean()

    result = face_metrics(pred, target, landmark_model=model, boxes=box)["akd"]
    assert result.available and result.reason is None and result.model == f"fan68 ({fan_file.name})"
    assert result.value == pytest.approx(distance, abs=1e-9)
    assert result.per_image == pytest.approx((distance,), abs=1e-9)
    assert result.image_size == tuple(target.shape[-2:])

    # Reported at another size, e.g. the paper's 667 x 667: the distances scale with the image.
    scaled = face_metrics(pred, target, landmark_model=fan_file, boxes=box, akd_size=667)["akd"]
    assert scaled.value == pytest.approx(distance * 667 / target.shape[-1], abs=1e-9)
    assert scaled.image_size == (667, 667)


def test_fan_decoding_matches_face_alignment_loop() -> None:
    """decode_heatmaps against a transcription of face-alignment's get_preds_fromhm (1-based indices)."""
    rng = np.random.default_rng(0)
    heatmaps = rng.random((2, 5, 64, 64)).astype(np.float32)
    heatmaps[0, 0, 0, 10] = 5.0  # on the border
    heatmaps[0, 1, 20, 63] = 5.0
    heatmaps[1, 2, 30, 30] = 5.0
    heatmaps[1, 2, 30, 31] = 4.0
    expected = np.zeros((2, 5, 2))
    for i in range(2):
        for j in range(5):
            idx = int(heatmaps[i, j].reshape(-1).argmax()) + 1
            px, py = (idx - 1) % 64 + 1, np.floor((idx - 1) / 64) + 1
            hm = heatmaps[i, j]
            x, y = int(px) - 1, int(py) - 1
            point = np.array([px, py], dtype=np.float64)
            if 0 < x < 63 and 0 < y < 63:
                point += np.sign([hm[y, x + 1] - hm[y, x - 1], hm[y + 1, x] - hm[y - 1, x]]) * 0.25
            expected[i, j] = point - 0.5
    np.testing.assert_allclose(decode_heatmaps(torch.from_numpy(heatmaps)).numpy(), expected)


def test_default_box_is_the_ground_truth_landmark_box(fan_file: Path) -> None:
    rng = np.random.default_rng(3)
    target = _dots(_cells(rng), np.zeros(68, bool), 1)[None]
    pred = _dots(_cells(rng), np.zeros(68, bool), 1)[None]
    model = load_landmark_model(fan_file)
    box = box_from_landmarks(model.predict(target, central_boxes(1, 256, 256)))
    assert box.shape == (1, 4)
    default = face_metrics(pred, target, landmark_model=model)["akd"]
    explicit = face_metrics(pred, target, landmark_model=model, boxes=box)["akd"]
    assert default.value == pytest.approx(explicit.value, abs=1e-12)
    # central_boxes: a square of half the shorter side around the image centre.
    np.testing.assert_allclose(central_boxes(2, 100, 200)[1].numpy(), [74.5, 24.5, 124.5, 74.5])


def test_identical_images_give_akd_0_and_csim_1(fan_file: Path, arcface_file: Path) -> None:
    rng = np.random.default_rng(5)
    images = torch.stack([_dots(_cells(rng), rng.random(68) < 0.5, 1) for _ in range(2)])
    images[:, 1:] = torch.rand(2, 2, 256, 256, generator=torch.Generator().manual_seed(0))
    results = face_metrics(images, images.clone(), landmark_model=fan_file, identity_model=arcface_file)
    assert results["akd"].value == 0.0 and results["akd"].per_image == (0.0, 0.0)
    assert results["csim"].value == pytest.approx(1.0, abs=1e-6)
    assert results["csim"].alignment == "landmarks"


# -- alignment -----------------------------------------------------------------------------------------------


def _similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_similarity_transform_recovers_a_known_transform() -> None:
    from skimage.transform import SimilarityTransform

    known = _similarity(0.37, 0.3, (20.0, -12.0))  # image -> template
    full = np.vstack([known, [0, 0, 1]])
    template_h = np.hstack([ARCFACE_TEMPLATE, np.ones((5, 1))])
    points = (np.linalg.inv(full) @ template_h.T).T[:, :2]
    found = similarity_transform(torch.from_numpy(points)[None], torch.from_numpy(ARCFACE_TEMPLATE))
    np.testing.assert_allclose(found[0].numpy(), known, atol=1e-9)

    # With noisy points: skimage's least-squares estimate (what insightface's estimate_norm uses).
    noisy = points + np.random.default_rng(1).normal(0, 3, points.shape)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        tform = SimilarityTransform.from_estimate(noisy, ARCFACE_TEMPLATE)
    else:
        tform = SimilarityTransform()
        tform.estimate(noisy, ARCFACE_TEMPLATE)
    found = similarity_transform(torch.from_numpy(noisy)[None], torch.from_numpy(ARCFACE_TEMPLATE))
    np.testing.assert_allclose(found[0].numpy(), tform.params[:2], atol=1e-9)


def test_align_faces_warps_like_cv2_warp_affine() -> None:
    """A linear ramp image is interpolated exactly, so the aligned face at (u, v) is the ramp at the
    image point the known similarity maps onto (u, v)."""
    height, width = 300, 260
    y, x = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    ramps = [(0.001 * x + 0.002 * y), (0.003 * x) + 0.05, 0.9 - 0.002 * y]
    image = torch.stack(ramps)[None].float()
    known = _similarity(0.5, -0.2, (-40.0, -30.0))
    inverse = np.linalg.inv(np.vstack([known, [0, 0, 1]]))
    points = (inverse @ np.hstack([ARCFACE_TEMPLATE, np.ones((5, 1))]).T).T[:, :2]
    aligned = align_faces(image, torch.from_numpy(points)[None])[0].double()
    v, u = np.meshgrid(np.arange(112), np.arange(112), indexing="ij")
    src = inverse[:2] @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    sx, sy = src[0].reshape(112, 112), src[1].reshape(112, 112)
    inside = (sx >= 0) & (sx <= width - 1) & (sy >= 0) & (sy <= height - 1)
    assert inside.mean() > 0.8
    expected = np.stack([0.001 * sx + 0.002 * sy, 0.003 * sx + 0.05, 0.9 - 0.002 * sy])
    np.testing.assert_allclose(aligned.numpy()[:, inside], expected[:, inside], atol=1e-5)

    # Box fallback: the box's square fills the 112 x 112 input.
    box = torch.tensor([[20.0, 40.0, 244.0, 250.0]])
    aligned = align_faces(image, boxes=box)[0].double().numpy()
    scale = 224 / 112
    sx = 132.0 + (u - 55.5) * scale
    sy = 145.0 + (v - 55.5) * scale
    expected = np.stack([0.001 * sx + 0.002 * sy, 0.003 * sx + 0.05, 0.9 - 0.002 * sy])
    np.testing.assert_allclose(aligned, expected, atol=1e-5)


def test_five_points_from_68_landmarks() -> None:
    landmarks = torch.rand(2, 68, 2, dtype=torch.float64) * 100
    points = five_points(landmarks)
    np.testing.assert_allclose(points[:, 0].numpy(), landmarks[:, 36:42].mean(1).numpy())
    np.testing.assert_allclose(points[:, 1].numpy(), landmarks[:, 42:48].mean(1).numpy())
    np.testing.assert_array_equal(points[:, 2:].numpy(), landmarks[:, [30, 48, 54]].numpy())


# -- CSIM ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_landmarks", [False, True])
def test_csim_is_the_cosine_of_independently_computed_embeddings(
    fan_file: Path, arcface_file: Path, with_landmarks: bool
) -> None:
    rng = np.random.default_rng(11)
    target = torch.stack([_dots(_cells(rng), rng.random(68) < 0.5, 1) for _ in range(3)])
    pred = torch.stack([_dots(_cells(rng), rng.random(68) < 0.5, 1) for _ in range(3)])
    gen = torch.Generator().manual_seed(2)
    target[:, 1:] = torch.rand(3, 2, 256, 256, generator=gen)
    pred[:, 1:] = (target[:, 1:] + 0.2 * torch.rand(3, 2, 256, 256, generator=gen)).clamp(0, 1)
    boxes = torch.tensor([[40.0, 50.0, 200.0, 210.0]] * 3)
    results = face_metrics(
        pred,
        target,
        landmark_model=fan_file if with_landmarks else None,
        identity_model=arcface_file,
        boxes=boxes,
    )
    result = results["csim"]
    assert result.available and result.model == "arcface (w600k_r50.onnx)"
    if with_landmarks:
        model = load_landmark_model(fan_file)
        aligned_p = align_faces(pred, five_points(model.predict(pred, boxes)))
        aligned_t = align_faces(target, five_points(model.predict(target, boxes)))
        assert result.alignment == "landmarks"
    else:
        aligned_p, aligned_t = align_faces(pred, boxes=boxes), align_faces(target, boxes=boxes)
        assert result.alignment == "box"
        assert not results["akd"].available
    expected = _cosine(_embed_numpy(aligned_p.double().numpy()), _embed_numpy(aligned_t.double().numpy()))
    assert result.per_image == pytest.approx(tuple(expected), abs=1e-5)
    assert result.value == pytest.approx(expected.mean(), abs=1e-5)
    assert abs(result.value) < 0.999  # a real difference, not a degenerate 1


def test_identity_model_with_a_fixed_batch_of_one(tmp_path: Path) -> None:
    path = _onnx_arcface(tmp_path / "b1.onnx", WEIGHT, batch=1)
    model = load_identity_model(path)
    aligned = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(
        model.embed(aligned).numpy(), _embed_numpy(aligned.double().numpy()), rtol=1e-4, atol=1e-4
    )


# -- unavailable ---------------------------------------------------------------------------------------------


def test_without_model_files_both_metrics_are_unavailable() -> None:
    images = torch.rand(2, 3, 64, 64)
    results = face_metrics(images, images)
    for name in ("akd", "csim"):
        result = results[name]
        assert isinstance(result, FaceMetricResult) and result.metric == name
        assert not result.available and result.value is None and result.per_image == ()
    assert "no landmark model" in results["akd"].reason
    assert "no identity model" in results["csim"].reason


def test_csim_is_unavailable_without_onnxruntime(monkeypatch: pytest.MonkeyPatch, arcface_file: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    images = torch.rand(1, 3, 64, 64)
    result = face_metrics(images, images, identity_model=arcface_file)["csim"]
    assert not result.available and result.value is None
    assert "onnxruntime" in result.reason and "face-metrics" in result.reason
    with pytest.raises(ImportError, match="onnxruntime"):
        load_identity_model(arcface_file)


# -- wrong weights -------------------------------------------------------------------------------------------


class _FiveHeatmaps(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4)[:, :1].expand(-1, 5, -1, -1)


def test_wrong_landmark_files_raise_naming_the_file(tmp_path: Path) -> None:
    cases = {}
    cases["missing"] = (tmp_path / "absent.zip", "does not exist")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a model" * 100)
    cases["corrupt"] = (corrupt, "not a TorchScript archive")
    state_dict = tmp_path / "2DFAN4-11f355bf06.pth.tar"
    torch.save({"conv1.weight": torch.zeros(2, 3)}, state_dict)
    cases["state dict"] = (state_dict, "state dict")
    five = _save_torchscript(_FiveHeatmaps(), tmp_path / "five.zip")
    cases["five heatmaps"] = (five, r"returns \(1, 5, 64, 64\)")
    for path, message in cases.values():
        with pytest.raises(FaceModelError, match=message) as info:
            load_landmark_model(path)
        assert str(path) in str(info.value) and "68 x 64 x 64" in str(info.value)
        assert isinstance(info.value, Avat3rError)
    # Through face_metrics too, given as a path.
    images = torch.rand(1, 3, 64, 64)
    with pytest.raises(FaceModelError, match=r"five\.zip"):
        face_metrics(images, images, landmark_model=five)
    with pytest.raises(FaceModelError, match=r"PIPNet 98-point .* not supported"):
        load_landmark_model(five, kind="pipnet98")
    with pytest.raises(ValueError, match="kind"):
        load_landmark_model(five, kind="dlib")  # type: ignore[arg-type]


def test_wrong_identity_files_raise_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 50)
    cases = [
        (tmp_path / "absent.onnx", "does not exist"),
        (corrupt, "not a readable ONNX model"),
        (
            _onnx_arcface(tmp_path / "det.onnx", np.zeros((3 * 4 * 4, 512)), size=64, pool=16),
            r"3, 64, 64\]",
        ),
        (_onnx_arcface(tmp_path / "d128.onnx", np.zeros((192, 128))), r"128\]"),
    ]
    for path, message in cases:
        with pytest.raises(FaceModelError, match=message) as info:
            load_identity_model(path)
        assert str(path) in str(info.value) and "112 x 112" in str(info.value) and "x 512" in str(info.value)
    images = torch.rand(1, 3, 64, 64)
    with pytest.raises(FaceModelError, match=r"d128\.onnx"):
        face_metrics(images, images, identity_model=tmp_path / "d128.onnx")


def test_bad_images_and_boxes_are_refused() -> None:
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="same"):
        face_metrics(images, images[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        face_metrics(images * 2, images)
    with pytest.raises(ValueError, match="boxes"):
        face_metrics(images, images, boxes=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x1 > x0"):
        face_metrics(images, images, boxes=torch.tensor([[5.0, 5, 1, 9]] * 2))
    with pytest.raises(ValueError, match="akd_size"):
        face_metrics(images, images, akd_size=0)

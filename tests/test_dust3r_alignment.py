"""Known-camera global alignment on a synthetic scene whose true geometry is known exactly.

An ellipsoid "head" (~0.2 m across) is seen by 4 cameras about 1 m away. Fake DUSt3R predictions are the true
pointmaps in view i's frame, each pair scaled, moved by a random small similarity and noised, as DUSt3R's are
only defined up to such a transform; the alignment must recover metric world positions with the true cameras.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avat3r_core.errors import Avat3rError
from avat3r_core.geometry.cameras import Camera, pixel_centers
from avat3r_core.models.dust3r.alignment import AlignmentDivergedError, align_known_cameras

SEMI_AXES = np.array([0.075, 0.1, 0.09])  # metres; head size (largest diameter) 0.2 m
HEAD_SIZE = 2.0 * float(SEMI_AXES.max())
WIDTH, HEIGHT = 48, 32
BACKGROUND_DEPTH = 2.5


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV axes, world +y up) for a camera at ``centre`` looking at ``target``."""
    forward = target - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ centre
    return w2c


def _cameras() -> list[Camera]:
    cams = []
    for k, (azim, elev) in enumerate([(-50.0, 10.0), (-15.0, -5.0), (20.0, 8.0), (55.0, -10.0)]):
        a, e = np.radians(azim), np.radians(elev)
        radius = 0.95 + 0.05 * k
        centre = radius * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])
        K = np.array([[115.0 + 3 * k, 0.0, 24.0 + 0.5 * k], [0.0, 117.0, 16.0 - 0.3 * k], [0.0, 0.0, 1.0]])
        cams.append(Camera(K=K, w2c=_look_at(centre, np.zeros(3)), width=WIDTH, height=HEIGHT))
    return cams


def _true_points(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points (H, W, 3) of the first ellipsoid hit (else the background depth) and the hit mask."""
    uv = pixel_centers(WIDTH, HEIGHT).reshape(-1, 2)
    far = cam.unproject(uv, np.ones(len(uv)))  # points at camera depth 1
    origin = cam.center
    direction = far - origin
    o, d = origin / SEMI_AXES, direction / SEMI_AXES
    a = (d * d).sum(1)
    b = 2.0 * (o * d).sum(1)
    c = (o * o).sum() - 1.0
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a), BACKGROUND_DEPTH)
    points = origin + t[:, None] * direction
    return points.reshape(HEIGHT, WIDTH, 3), hit.reshape(HEIGHT, WIDTH)


def _scene(
    seed: int = 0, noise: float = 0.005 * HEAD_SIZE
) -> tuple[dict, list, list[Camera], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cams = _cameras()
    truth = [_true_points(c) for c in cams]
    world = np.stack([t[0] for t in truth])
    heads = np.stack([t[1] for t in truth])
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    out: dict[str, list[np.ndarray]] = {"pts3d_1": [], "conf_1": [], "pts3d_2_in_1": [], "conf_2": []}
    for i, j in pairs:
        scale = rng.uniform(0.5, 2.0)
        rot = Rotation.from_rotvec(rng.normal(size=3) * np.radians(3.0)).as_matrix()
        shift = rng.normal(size=3) * 0.05
        for view, pkey, ckey in ((i, "pts3d_1", "conf_1"), (j, "pts3d_2_in_1", "conf_2")):
            in_i = world[view] @ cams[i].R.T + cams[i].t
            in_i = in_i + rng.normal(size=in_i.shape) * noise
            out[pkey].append(scale * (in_i @ rot.T + shift))
            conf = np.where(heads[view], rng.uniform(1.5, 5.0, heads[view].shape), rng.uniform(1.0, 1.2))
            out[ckey].append(conf)
    predictions = {k: torch.as_tensor(np.stack(v), dtype=torch.float32) for k, v in out.items()}
    return predictions, pairs, cams, world, heads


def _errors(points: np.ndarray, world: np.ndarray, heads: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points - world, axis=-1)[heads] / HEAD_SIZE


def test_recovers_metric_world_points() -> None:
    predictions, pairs, cams, world, heads = _scene()
    result = align_known_cameras(predictions, pairs, cams, iterations=300)
    assert result.points.shape == (4, HEIGHT, WIDTH, 3) and result.points.dtype == np.float32
    assert result.confidence.shape == (4, HEIGHT, WIDTH) and result.confidence.dtype == np.float32
    assert result.iterations == 300 and np.isfinite(result.loss)
    err = _errors(result.points, world, heads)
    median, p95 = float(np.median(err)), float(np.percentile(err, 95))
    print(f"head pixels {err.size}: median {median:.4%}, p95 {p95:.4%}, max {err.max():.4%} of head size")
    assert median < 0.005
    assert p95 < 0.01
    # Adam lowers the (L1-norm) loss below that of the ray-fitted initialisation.
    assert result.loss < 0.9 * align_known_cameras(predictions, pairs, cams, iterations=0).loss


def test_noise_free_is_exact() -> None:
    """Without noise the similarities and depths are recovered to float32 precision (conventions agree)."""
    predictions, pairs, cams, world, heads = _scene(noise=0.0)
    err = _errors(align_known_cameras(predictions, pairs, cams, iterations=100).points, world, heads)
    assert float(err.max()) < 1e-3  # 0.2 mm; the init alone is ~1e-5, Adam jitters within its lr schedule


def test_confidence_is_max_raw_conf_over_pairs() -> None:
    predictions, pairs, cams, _, _ = _scene()
    result = align_known_cameras(predictions, pairs, cams, iterations=2)
    expected = np.ones((4, HEIGHT, WIDTH), dtype=np.float32)
    for p, (i, j) in enumerate(pairs):
        expected[i] = np.maximum(expected[i], predictions["conf_1"][p].numpy())
        expected[j] = np.maximum(expected[j], predictions["conf_2"][p].numpy())
    np.testing.assert_array_equal(result.confidence, expected)


def test_initialisation_alone_is_close() -> None:
    """With zero Adam steps the ray-fitted initialisation is already metric and in the world frame."""
    predictions, pairs, cams, world, heads = _scene(seed=1)
    result = align_known_cameras(predictions, pairs, cams, iterations=0)
    assert result.iterations == 0
    assert float(np.median(_errors(result.points, world, heads))) < 0.01


def test_numpy_inputs_and_identical_outputs() -> None:
    predictions, pairs, cams, _, _ = _scene(seed=2)
    first = align_known_cameras(predictions, pairs, cams, iterations=30)
    second = align_known_cameras({k: v.numpy() for k, v in predictions.items()}, pairs, cams, iterations=30)
    np.testing.assert_array_equal(first.points, second.points)
    np.testing.assert_array_equal(first.confidence, second.confidence)
    assert first.loss == second.loss


def test_nan_predictions_raise_diverged() -> None:
    predictions, pairs, cams, _, _ = _scene()
    predictions["pts3d_2_in_1"][3, 5, 7, 1] = float("nan")
    with pytest.raises(AlignmentDivergedError, match="iteration 0") as info:
        align_known_cameras(predictions, pairs, cams, iterations=5)
    assert isinstance(info.value, Avat3rError)
    assert "(0, 4)" not in str(info.value) and str(pairs[3]) in str(info.value)


def test_divergence_during_optimisation_names_iteration() -> None:
    predictions, pairs, cams, _, _ = _scene()
    with pytest.raises(AlignmentDivergedError, match=r"iteration \d+"):
        align_known_cameras(predictions, pairs, cams, iterations=5, lr=1e30)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p, pr, c: p.pop("conf_2"), "lack keys"),
        (
            lambda p, pr, c: p.__setitem__("pts3d_1", p["pts3d_1"][..., :2]),
            r"pts3d_1'\] must be \(P, H, W, 3\)",
        ),
        (lambda p, pr, c: p.__setitem__("conf_1", p["conf_1"][:, :-1]), r"conf_1'\] must have shape"),
        (
            lambda p, pr, c: p.__setitem__("pts3d_2_in_1", p["pts3d_2_in_1"][:-1]),
            r"pts3d_2_in_1'\] must have",
        ),
        (lambda p, pr, c: pr.pop(), "11 pairs but predictions hold 12"),
        (lambda p, pr, c: pr.__setitem__(0, (0, 9)), "out of range"),
        (lambda p, pr, c: pr.__setitem__(0, (1, 1)), "with itself"),
        (lambda p, pr, c: c.__setitem__(2, c[2].resize(24, 16)), r"cameras\[2\] is 24x16"),
        (lambda p, pr, c: c.append(c[0]), r"views \[4\] are in no pair"),
    ],
)
def test_bad_inputs_raise_value_error(mutate: Callable[[dict, list, list], object], message: str) -> None:
    predictions, pairs, cams, _, _ = _scene()
    mutate(predictions, pairs, cams)
    with pytest.raises(ValueError, match=message):
        align_known_cameras(predictions, pairs, cams, iterations=1)

"""JOD through ColorVideoVDP / FovVideoVDP: the ceiling for identical videos, monotone in noise, what the
result records, the honest "unavailable" path and the input errors.

Small clips (3 frames of 64x64 at Ava-256's 7.5 fps) keep each call at a few tens of milliseconds on CPU.
Tests that need a package skip without it; the unavailable path and the input checks need neither.
"""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
from torch import Tensor

from avat3r_core.metrics import video
from avat3r_core.metrics.video import JOD_MAX, JODResult, jod

FPS = 7.5  # Ava-256's capture rate
METRICS = [
    pytest.param("cvvdp", "pycvvdp", id="cvvdp"),
    pytest.param("fvvdp", "pyfvvdp", id="fvvdp"),
]


def _clip(seed: int = 0, frames: int = 3, side: int = 64) -> Tensor:
    """A smooth random clip in [0, 1] (low-frequency content, so added noise is clearly visible)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((frames, 3, side // 8, side // 8), generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def _noisy(clip: Tensor, sigma: float, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (clip + sigma * torch.randn(clip.shape, generator=generator)).clamp(0, 1)


@pytest.mark.parametrize(("metric", "module"), METRICS)
def test_identical_videos_reach_the_maximum(metric: str, module: str) -> None:
    pytest.importorskip(module)
    clip = _clip()
    result = jod(clip, clip.clone(), FPS, metric=metric)
    assert result.available and result.reason is None
    assert result.value == pytest.approx(JOD_MAX, abs=1e-3)


@pytest.mark.parametrize(("metric", "module"), METRICS)
def test_more_noise_lowers_jod(metric: str, module: str) -> None:
    pytest.importorskip(module)
    clip = _clip()
    values = [jod(_noisy(clip, sigma), clip, FPS, metric=metric).value for sigma in (0.01, 0.03, 0.1, 0.3)]
    assert all(v is not None and math.isfinite(v) for v in values), values
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[0] < JOD_MAX


@pytest.mark.parametrize(("metric", "module"), METRICS)
def test_result_records_metric_and_display(metric: str, module: str) -> None:
    pytest.importorskip(module)
    clip = _clip()
    result = jod(_noisy(clip, 0.05), clip, FPS, metric=metric, display="standard_fhd")
    assert isinstance(result, JODResult)
    assert (result.metric, result.display, result.available) == (metric, "standard_fhd", True)
    assert isinstance(result.value, float)


@pytest.mark.parametrize(("metric", "module"), METRICS)
def test_single_frame_and_float64_input(metric: str, module: str) -> None:
    """T = 1 is scored as an image; float64 frames are accepted (converted to float32 for the package)."""
    pytest.importorskip(module)
    clip = _clip(frames=1).double()
    assert jod(clip, clip, FPS, metric=metric).value == pytest.approx(JOD_MAX, abs=1e-3)
    assert jod(_noisy(clip, 0.1), clip, FPS, metric=metric).value < JOD_MAX


@pytest.mark.parametrize("metric", ["cvvdp", "fvvdp"])
def test_missing_package_is_reported_not_scored(metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module_name = video.JOD_METRICS[metric][0]
    real_import = importlib.import_module

    def failing_import(name: str, *args: object, **kwargs: object) -> object:
        if name == module_name:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(video.importlib, "import_module", failing_import)
    clip = _clip()
    result = jod(clip, clip, FPS, metric=metric)
    assert result.available is False
    assert result.value is None
    assert (result.metric, result.display) == (metric, "standard_4k")
    assert result.reason is not None and module_name in result.reason


@pytest.mark.parametrize(
    ("pred", "target", "fps", "match"),
    [
        (_clip(frames=3), _clip(frames=2), FPS, "same"),
        (_clip()[:, :1], _clip()[:, :1], FPS, r"\(T, 3, H, W\)"),
        (_clip()[0], _clip()[0], FPS, r"\(T, 3, H, W\)"),
        (_clip() * 1.5, _clip(), FPS, r"pred .*\[0, 1\]"),
        (_clip(), _clip() - 0.5, FPS, r"target .*\[0, 1\]"),
        (_clip().index_fill(0, torch.tensor([0]), math.nan), _clip(), FPS, "NaN"),
        (_clip(), _clip(), 0.0, "frames-per-second"),
        (_clip(), _clip(), -7.5, "frames-per-second"),
        (_clip(), _clip(), math.inf, "frames-per-second"),
    ],
)
def test_invalid_input_raises(pred: Tensor, target: Tensor, fps: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        jod(pred, target, fps)


def test_unknown_metric_and_integer_frames_raise() -> None:
    clip = _clip()
    with pytest.raises(ValueError, match="metric"):
        jod(clip, clip, FPS, metric="vmaf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        jod((clip * 255).to(torch.uint8), (clip * 255).to(torch.uint8), FPS)


def test_fvvdp_refuses_videos_below_its_frame_rate_floor() -> None:
    clip = _clip()
    with pytest.raises(ValueError, match="fvvdp"):
        jod(clip, clip, 4.0, metric="fvvdp")


@pytest.mark.parametrize(("metric", "module"), METRICS)
def test_unknown_display_raises(metric: str, module: str) -> None:
    pytest.importorskip(module)
    clip = _clip()
    with pytest.raises(ValueError, match="no_such_display"):
        jod(clip, clip, FPS, metric=metric, display="no_such_display")

"""PSNR, SSIM and LPIPS: parity with torchmetrics, scikit-image and the `lpips` package, and the error paths.

No real weights are needed: the LPIPS parity builds `lpips.LPIPS(pnet_rand=True)` (a seeded random AlexNet
plus the real v0.1 heads from its wheel), writes its backbone into a full torchvision-layout AlexNet state
dict and loads ours from that file, so both sides run the same weights through different code.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor

from avat3r_core.metrics import (
    ALEXNET_FILE,
    ALEXNET_URL,
    LPIPS,
    LPIPS_MIN_SIDE,
    LPIPSWeightsError,
    find_lpips_heads,
    gaussian_window,
    lpips_available,
    lpips_for_loss_weight,
    psnr,
    ssim,
    ssim_loss,
    ssim_map,
)


def _pair(shape: tuple[int, ...], seed: int, noise: float = 0.15) -> tuple[Tensor, Tensor]:
    """A target in [0, 1] and a noisy, clamped prediction of it (SSIM well away from 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    pred = (target + noise * torch.randn(shape, generator=generator)).clamp(0, 1)
    return pred, target


# ------------------------------------------------------------------------------------------------- PSNR


def test_psnr_matches_hand_computation() -> None:
    pred, target = _pair((3, 3, 17, 23), seed=0)
    mse = ((pred.double().numpy() - target.double().numpy()) ** 2).reshape(3, -1).mean(axis=1)
    expected = 10 * np.log10(1.0 / mse)
    np.testing.assert_allclose(psnr(pred, target).numpy(), expected, rtol=0, atol=1e-4)
    scaled = psnr(pred * 255, target * 255, data_range=255.0)
    np.testing.assert_allclose(scaled.numpy(), expected, rtol=0, atol=1e-4)
    assert psnr(pred, target).shape == (3,)


def test_psnr_matches_torchmetrics() -> None:
    functional = pytest.importorskip("torchmetrics.functional.image")
    pred, target = _pair((4, 3, 32, 40), seed=1)
    reference = functional.peak_signal_noise_ratio(
        pred, target, data_range=1.0, dim=(1, 2, 3), reduction="none"
    )
    assert (psnr(pred, target) - reference).abs().max().item() < 1e-5


def test_psnr_identical_images_is_inf() -> None:
    pred, _ = _pair((2, 3, 8, 8), seed=2)
    assert torch.isinf(psnr(pred, pred.clone())).all()


def test_psnr_mask_averages_over_masked_pixels_only() -> None:
    pred, target = _pair((2, 3, 12, 14), seed=3)
    mask = torch.zeros(2, 1, 12, 14, dtype=torch.bool)
    mask[0, :, 2:7, 3:9] = True
    mask[1, :, 5:, :4] = True
    pred_outside = torch.where(mask, pred, torch.rand_like(pred))  # what lies outside must not matter
    got = psnr(pred_outside, target, mask=mask)
    for i in range(2):
        selected = mask[i, 0]
        mse = (pred[i][:, selected].double() - target[i][:, selected].double()).square().mean()
        assert abs(got[i].item() - (10 * torch.log10(1 / mse)).item()) < 1e-4
    full_channel = psnr(pred_outside, target, mask=mask.expand(-1, 3, -1, -1).float())
    assert torch.allclose(full_channel, got)
    assert torch.isnan(psnr(pred, target, mask=torch.zeros(2, 1, 12, 14))).all()
    with pytest.raises(ValueError, match="mask"):
        psnr(pred, target, mask=torch.ones(2, 2, 12, 14))


# ------------------------------------------------------------------------------------------------- SSIM


def test_gaussian_window_is_torchmetrics_size() -> None:
    window = gaussian_window(1.5)
    assert window.numel() == 11
    assert abs(window.sum().item() - 1) < 1e-6
    assert torch.equal(window, window.flip(0))


@pytest.mark.parametrize(("shape", "data_range"), [((3, 3, 40, 52), 1.0), ((2, 1, 23, 17), 255.0)])
def test_ssim_matches_torchmetrics(shape: tuple[int, ...], data_range: float) -> None:
    functional = pytest.importorskip("torchmetrics.functional.image")
    pred, target = _pair(shape, seed=4)
    pred, target = pred * data_range, target * data_range
    reference = functional.structural_similarity_index_measure(
        pred, target, data_range=data_range, reduction="none"
    )
    ours = ssim(pred, target, data_range=data_range)
    assert ours.shape == (shape[0],)
    assert (ours - reference).abs().max().item() < 1e-5
    mean_reference = functional.structural_similarity_index_measure(pred, target, data_range=data_range)
    ours_mean = ssim(pred, target, data_range=data_range, reduction="mean")
    assert abs(ours_mean.item() - mean_reference.item()) < 1e-5


def _skimage_ssim(pred: Tensor, target: Tensor) -> list[tuple[float, np.ndarray]]:
    metrics = pytest.importorskip("skimage.metrics")
    return [
        metrics.structural_similarity(
            a.permute(1, 2, 0).double().numpy(),
            b.permute(1, 2, 0).double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
            full=True,
        )
        for a, b in zip(pred, target, strict=True)
    ]


def test_ssim_matches_skimage() -> None:
    """skimage drops a 5 px border (crop_border=True); inside it every implementation sees the same pixels.

    Its map near the border differs by design (scipy's 'reflect' repeats the edge pixel, torch's does not),
    so the full maps are compared on the interior only.
    """
    pred, target = _pair((3, 3, 36, 45), seed=5)
    reference = _skimage_ssim(pred, target)
    cropped64 = ssim(pred.double(), target.double(), crop_border=True)
    cropped32 = ssim(pred, target, crop_border=True)
    full_map = ssim_map(pred.double(), target.double())
    for i, (mean, image) in enumerate(reference):
        assert abs(cropped64[i].item() - mean) < 1e-10
        assert abs(cropped32[i].item() - mean) < 1e-5
        interior = full_map[i].permute(1, 2, 0)[5:-5, 5:-5].numpy()
        assert np.abs(interior - image[5:-5, 5:-5]).max() < 1e-10
    # The two conventions really differ, so the flag matters.
    assert (ssim(pred, target) - cropped32).abs().max().item() > 1e-4


def test_ssim_identity_and_loss() -> None:
    pred, target = _pair((2, 3, 20, 20), seed=6)
    assert torch.allclose(ssim(target, target.clone()), torch.ones(2), atol=1e-6)
    assert abs(ssim_loss(target, target.clone()).item()) < 1e-6
    assert torch.allclose(ssim_loss(pred, target), 1 - ssim(pred, target).mean())
    assert torch.allclose(ssim_loss(pred, target, reduction="none"), 1 - ssim(pred, target))


def test_ssim_under_bf16_autocast_computes_in_float32() -> None:
    pred, target = _pair((2, 3, 24, 24), seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ssim(pred, target)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, ssim(pred, target))  # autocast would have run the convolutions in bf16

    low_pred = pred.to(torch.bfloat16).requires_grad_(True)
    low_target = target.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = ssim(low_pred, low_target)
        psnr_value = psnr(low_pred, low_target)
    assert value.dtype == psnr_value.dtype == torch.float32
    assert torch.equal(value, ssim(low_pred.float(), low_target.float()))
    value.sum().backward()
    assert low_pred.grad is not None and low_pred.grad.dtype == torch.bfloat16
    assert torch.isfinite(low_pred.grad.float()).all() and low_pred.grad.abs().sum() > 0


def test_ssim_gradients_are_correct() -> None:
    pred, target = _pair((1, 2, 9, 8), seed=8)
    pred = pred.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: ssim(p, target.double()), (pred,))


def test_ssim_rejects_bad_input() -> None:
    pred, target = _pair((1, 3, 5, 20), seed=9)
    with pytest.raises(ValueError, match="larger than 5"):
        ssim(pred, target)
    pred, target = _pair((1, 3, 10, 20), seed=9)
    with pytest.raises(ValueError, match="crop_border"):
        ssim(pred, target, crop_border=True)
    with pytest.raises(ValueError, match="same"):
        ssim(pred, target[:, :2])
    with pytest.raises(ValueError, match="reduction"):
        ssim(pred, target, reduction="sum")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ LPIPS


def _lpips_reference():
    """`lpips.LPIPS` with a seeded random AlexNet and the real v0.1 heads from its wheel (no download)."""
    lpips = pytest.importorskip("lpips")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=` inside lpips
        return lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)


def _alexnet_state_with(features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A complete torchvision `alexnet()` state dict whose `features.*` are the given tensors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        state = torchvision.models.alexnet().state_dict()
    for key, value in features.items():
        assert state[key].shape == value.shape, key
        state[key] = value.detach().clone()
    return state


@pytest.fixture(scope="module")
def lpips_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, LPIPS]:
    """(reference lpips model, path of the torchvision-layout AlexNet file, ours loaded from that file)."""
    reference = _lpips_reference()
    # lpips keeps torchvision's layer indices inside its slices: net.slice2.3.weight is features.3.weight.
    features = {f"features.{k.split('.', 1)[1]}": v for k, v in reference.net.state_dict().items()}
    path = tmp_path_factory.mktemp("lpips") / ALEXNET_FILE
    torch.save(_alexnet_state_with(features), path)
    return reference, path, LPIPS.from_files(path)


def test_lpips_matches_lpips_package(lpips_setup) -> None:
    reference, _, ours = lpips_setup
    pred, target = _pair((3, 3, 64, 80), seed=10, noise=0.3)
    with torch.no_grad():
        expected = reference(pred, target, normalize=True).flatten()
        got = ours(pred, target)
    assert got.shape == (3,)
    assert (got - expected).abs().max().item() < 1e-5
    assert expected.min().item() > 1e-3  # a real distance, not a trivially zero one
    assert torch.equal(ours(target, target.clone()), torch.zeros(3))


def test_lpips_heads_come_from_the_installed_package(lpips_setup) -> None:
    _, _, ours = lpips_setup
    heads_file = find_lpips_heads()
    assert heads_file is not None and heads_file.name == "alex.pth" and "v0.1" in heads_file.parts
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    for i, head in enumerate(ours.heads):
        assert torch.equal(head.weight, heads[f"lin{i}.model.1.weight"])


def test_lpips_is_frozen_but_differentiable(lpips_setup) -> None:
    _, _, ours = lpips_setup
    assert not any(p.requires_grad for p in ours.parameters())
    ours.train()
    assert not ours.training and not any(m.training for m in ours.modules())
    pred, target = _pair((2, 3, LPIPS_MIN_SIDE, 40), seed=11)
    pred.requires_grad_(True)
    ours(pred, target).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in ours.parameters())
    with pytest.raises(ValueError, match=str(LPIPS_MIN_SIDE)):
        ours(pred[..., : LPIPS_MIN_SIDE - 1], target[..., : LPIPS_MIN_SIDE - 1])


def test_lpips_under_bf16_autocast_computes_in_float32(lpips_setup) -> None:
    _, _, ours = lpips_setup
    pred, target = _pair((2, 3, 48, 48), seed=12)
    with torch.no_grad():
        plain = ours(pred, target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = ours(pred, target)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def _small_file(path: Path, state: Mapping[str, Tensor]) -> Path:
    """Save a state dict whose tensors are stride-0 views of one element: right shapes, a few KB on disk."""
    torch.save({key: torch.zeros(()).expand(value.shape) for key, value in state.items()}, path)
    return path


def test_lpips_strict_loading_names_key_and_file(lpips_setup, tmp_path: Path) -> None:
    _, alexnet_path, _ = lpips_setup
    with torch.device("meta"):
        layout = torchvision.models.alexnet().state_dict()
    without = {key: value for key, value in layout.items() if key != "features.3.weight"}
    missing = _small_file(tmp_path / "missing.pth", without)
    with pytest.raises(LPIPSWeightsError, match=r"missing keys: features\.3\.weight") as caught:
        LPIPS.from_files(missing)
    assert str(missing) in str(caught.value)

    extra = _small_file(tmp_path / "extra.pth", {**layout, "features.13.weight": torch.empty(1)})
    with pytest.raises(LPIPSWeightsError, match=r"unexpected keys: features\.13\.weight"):
        LPIPS.from_files(extra)
    wrong = _small_file(tmp_path / "wrong.pth", {**layout, "features.0.weight": torch.empty(64, 3, 3, 3)})
    with pytest.raises(LPIPSWeightsError, match=r"wrong shape: features\.0\.weight"):
        LPIPS.from_files(wrong)

    heads_file = find_lpips_heads()
    assert heads_file is not None
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    del heads["lin4.model.1.weight"]
    bad_heads = tmp_path / "alex_heads.pth"
    torch.save(heads, bad_heads)
    with pytest.raises(LPIPSWeightsError, match=r"missing keys: lin4\.model\.1\.weight") as caught:
        LPIPS.from_files(alexnet_path, bad_heads)
    assert str(bad_heads) in str(caught.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(LPIPSWeightsError, match="weights-only"):
        LPIPS.from_files(garbage)


def test_lpips_missing_files_say_what_is_needed(lpips_setup, tmp_path: Path) -> None:
    _, alexnet_path, _ = lpips_setup
    absent = tmp_path / ALEXNET_FILE
    for path, names in ((absent, "file not found"), (None, "no file given")):
        with pytest.raises(LPIPSWeightsError, match=names) as caught:
            LPIPS.from_files(path)
        message = str(caught.value)
        assert ALEXNET_FILE in message and ALEXNET_URL in message
        assert path is None or str(path) in message
    with pytest.raises(LPIPSWeightsError, match="file not found"):
        LPIPS.from_files(alexnet_path, tmp_path / "alex.pth")


def test_lpips_loss_weight_switch(lpips_setup, tmp_path: Path) -> None:
    _, alexnet_path, _ = lpips_setup
    assert lpips_for_loss_weight(0.0, None) is None  # off: no file is looked at
    with pytest.raises(LPIPSWeightsError, match=ALEXNET_FILE):
        lpips_for_loss_weight(0.01, tmp_path / "absent.pth")
    assert isinstance(lpips_for_loss_weight(0.01, alexnet_path), LPIPS)
    with pytest.raises(ValueError):
        lpips_for_loss_weight(-1.0, alexnet_path)
    assert lpips_available(alexnet_path)
    assert not lpips_available(None)
    assert not lpips_available(tmp_path / "absent.pth")
    assert not lpips_available(alexnet_path, tmp_path / "absent_heads.pth")

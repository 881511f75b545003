"""BackgroundMattingV2 port: parity with the official outputs, checkpoint loading, and the batched API.

The fixture (shared/fixtures/official/bgmv2_mobilenetv2) holds a state dict written as upstream's
train_refine.py does and the official model's outputs for it (see its README). Tolerance 1e-5 absolute,
refinement maps exact; the official float64/float32 gap there is 8.6e-7.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from avat3r_core.errors import Avat3rError
from avat3r_core.models.bgmv2 import (
    BGMv2Matter,
    CheckpointError,
    MattingBase,
    MattingRefine,
    detect_backbone,
    export_torchscript,
    is_random_checkpoint,
    is_torchscript_file,
    load_model,
    load_state_dict_strict,
    load_torchscript,
    pad_multiple,
    read_state_dict,
    write_random_checkpoint,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official" / "bgmv2_mobilenetv2"
if not FIXTURE.is_dir():  # the checkout may sit elsewhere; the shared folder does not move
    FIXTURE = Path("/work/shared/fixtures/official/bgmv2_mobilenetv2")
CHECKPOINT = FIXTURE / "pytorch_mobilenetv2.pth"
TOL = 1e-5
REFINE_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")
BASE_OUTPUTS = ("pha", "fgr", "err", "hid")


@pytest.fixture(autouse=True)
def _quiet_torchscript_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        yield


@pytest.fixture(scope="module")
def io() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def inputs(io: dict[str, np.ndarray]) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(io["src"]), torch.from_numpy(io["bgr"])


@pytest.fixture(scope="module")
def full_model() -> nn.Module:
    model, random_weights = load_model(CHECKPOINT, "mobilenetv2", refine_mode="full")
    assert not random_weights
    return model


def _run(model: nn.Module, src: Tensor, bgr: Tensor) -> tuple[np.ndarray, ...]:
    with torch.no_grad():
        return tuple(t.numpy() for t in model(src, bgr))


def _max_errors(outputs: tuple[np.ndarray, ...], names: tuple[str, ...], io: dict, prefix: str = "") -> dict:
    return {
        n: float(np.abs(o - io[prefix + n]).max())
        for n, o in zip(names, outputs, strict=True)
        if prefix + n in io
    }


# ----------------------------------------------------------------------------------------- parity


def test_fixture_key_layout_matches_release() -> None:
    state_dict = read_state_dict(CHECKPOINT)
    groups = {
        p: sum(k.startswith(p + ".") for k in state_dict) for p in ("backbone", "aspp", "decoder", "refiner")
    }
    assert groups == {"backbone": 306, "aspp": 36, "decoder": 20, "refiner": 20}
    assert len(state_dict) == 382 and detect_backbone(list(state_dict)) == "mobilenetv2"
    assert set(state_dict) == set(MattingRefine("mobilenetv2").state_dict())


def test_full_mode_reproduces_all_official_outputs(full_model: nn.Module, inputs, io) -> None:
    outputs = _run(full_model, *inputs)
    errors = _max_errors(outputs, REFINE_OUTPUTS, io)
    assert set(errors) == set(REFINE_OUTPUTS)
    assert max(errors.values()) <= TOL, errors
    assert outputs[0].shape == (1, 1, 64, 64) and outputs[2].shape == (1, 1, 16, 16)
    np.testing.assert_array_equal(outputs[5], io["ref_sm"])


def test_sampling_mode_reproduces_official_outputs_and_patch_choice(inputs, io) -> None:
    model, _ = load_model(CHECKPOINT, "mobilenetv2", refine_mode="sampling", refine_sample_pixels=256)
    outputs = _run(model, *inputs)
    errors = _max_errors(outputs, REFINE_OUTPUTS, io, prefix="sampling_")
    assert set(errors) == {"pha", "fgr", "ref_sm"}
    assert max(errors.values()) <= TOL, errors
    np.testing.assert_array_equal(outputs[5], io["sampling_ref_sm"])
    assert outputs[5].sum() == 256 // 16
    # The coarse outputs do not depend on the refine mode.
    coarse = _max_errors(outputs[2:5], REFINE_OUTPUTS[2:5], io)
    assert max(coarse.values()) <= TOL, coarse


@pytest.mark.parametrize(
    ("crop", "replace"),
    [("roi_align", "scatter_nd"), ("gather", "scatter_element"), ("unfold", "scatter_element")],
)
def test_patch_crop_and_replace_variants_agree(inputs, io, crop: str, replace: str) -> None:
    model = MattingRefine(
        "mobilenetv2",
        refine_mode="sampling",
        refine_sample_pixels=256,
        refine_patch_crop_method=crop,
        refine_patch_replace_method=replace,
    )
    load_state_dict_strict(model, read_state_dict(CHECKPOINT), CHECKPOINT)
    pha, fgr, *_, ref_sm = _run(model.eval(), *inputs)
    assert np.abs(pha - io["sampling_pha"]).max() <= TOL
    assert np.abs(fgr - io["sampling_fgr"]).max() <= TOL
    np.testing.assert_array_equal(ref_sm, io["sampling_ref_sm"])


def test_matting_base_from_refine_file_reproduces_official_outputs(inputs, io) -> None:
    model, _ = load_model(CHECKPOINT, "mobilenetv2", base_only=True)
    assert isinstance(model, MattingBase) and not isinstance(model, MattingRefine)
    outputs = _run(model, *inputs)
    errors = _max_errors(outputs, BASE_OUTPUTS, io, prefix="base_")
    assert set(errors) == set(BASE_OUTPUTS)
    assert max(errors.values()) <= TOL, errors
    assert outputs[3].shape == (1, 32, 64, 64)


def test_thresholding_refines_exactly_the_patches_above_threshold(full_model: nn.Module, inputs) -> None:
    """Refined patches equal full mode there (same receptive field); the rest is the upsampled coarse pass."""
    model = copy.deepcopy(full_model)
    model.refiner.mode = "thresholding"
    model.refiner.threshold = 0.3
    pha, _, _, _, err_sm, ref_sm = _run(model, *inputs)
    full_pha = _run(full_model, *inputs)[0]
    err_quarter = torch.nn.functional.interpolate(torch.from_numpy(err_sm), (16, 16), mode="bilinear")
    np.testing.assert_array_equal(ref_sm, (err_quarter > 0.3).float().numpy())
    assert 0 < ref_sm.sum() < ref_sm.size
    refined = np.kron(ref_sm[0, 0], np.ones((4, 4))).astype(bool)
    assert np.abs(pha[0, 0][refined] - full_pha[0, 0][refined]).max() <= TOL
    assert np.abs(pha[0, 0][~refined] - full_pha[0, 0][~refined]).max() > 1e-3  # unrefined really differs

    model.refiner.threshold = 1.0  # nothing above it: plain upsampling of the coarse alpha
    pha, _, pha_sm, _, _, ref_sm = _run(model, *inputs)
    assert ref_sm.sum() == 0
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(pha_sm), (64, 64), mode="bilinear").numpy()
    assert np.abs(pha - upsampled).max() <= 1e-6


def test_negative_control_ignoring_batchnorm_running_stats_fails_tolerance(full_model, inputs, io) -> None:
    """Proves the parity tests can fail: a loader that dropped the BN buffers must be caught."""
    broken = copy.deepcopy(full_model)
    for module in broken.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    errors = _max_errors(_run(broken, *inputs), REFINE_OUTPUTS, io)
    assert errors["pha"] > 100 * TOL and errors["err_sm"] > 100 * TOL, errors


# ----------------------------------------------------------------------------------------- TorchScript


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file in the released TorchScript layout, scripted here from the fixture weights."""
    model, _ = load_model(CHECKPOINT, "mobilenetv2")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return export_torchscript(model, tmp_path_factory.mktemp("ts") / "torchscript_mobilenetv2_fp32.pth")


def test_torchscript_export_matches_eager_after_setting_attributes(
    torchscript_file: Path, inputs, io
) -> None:
    assert is_torchscript_file(torchscript_file) and not is_torchscript_file(CHECKPOINT)
    module = load_torchscript(torchscript_file, "mobilenetv2")
    assert isinstance(module, torch.jit.ScriptModule)
    assert (module.backbone_scale, module.refine_mode, module.refine_sample_pixels) == (
        0.25,
        "sampling",
        80_000,
    )
    module.refine_mode = "sampling"
    module.refine_sample_pixels = 256
    outputs = _run(module, *inputs)
    errors = _max_errors(outputs, REFINE_OUTPUTS, io, prefix="sampling_")
    assert max(errors.values()) <= TOL, errors
    np.testing.assert_array_equal(outputs[5], io["sampling_ref_sm"])
    module.refine_mode = "full"
    full = _run(module, *inputs)
    assert max(_max_errors(full, REFINE_OUTPUTS, io).values()) <= TOL

    # Its parameters are the network's under `model.`: they load strictly back into the eager model.
    assert len(module.state_dict()) == 382 and all(k.startswith("model.") for k in module.state_dict())
    state = {k.removeprefix("model."): v for k, v in module.state_dict().items()}
    eager = MattingRefine("mobilenetv2")
    load_state_dict_strict(eager, state, torchscript_file)


def test_matter_gives_same_result_from_torchscript_and_state_dict(torchscript_file: Path, io) -> None:
    images = np.round(io["src"][0].transpose(1, 2, 0) * 255).astype(np.uint8)[None].repeat(2, 0)
    plates = np.round(io["bgr"][0].transpose(1, 2, 0) * 255).astype(np.uint8)[None].repeat(2, 0)
    kwargs = dict(backbone="mobilenetv2", refine_sample_pixels=256, device="cpu")
    from_ts = BGMv2Matter(torchscript_file, **kwargs)
    from_sd = BGMv2Matter(CHECKPOINT, **kwargs)
    assert from_ts.format == "torchscript" and from_sd.format == "state dict"
    a_ts, f_ts = from_ts(images, plates)
    a_sd, f_sd = from_sd(images, plates)
    assert np.abs(a_ts - a_sd).max() <= 1e-6 and np.abs(f_ts - f_sd).max() <= 1e-6
    assert "torchscript" in from_ts.description and "RANDOM" not in from_ts.description


def test_fp16_torchscript_runs_fp32_on_cpu(tmp_path: Path, full_model: nn.Module, inputs, io) -> None:
    path = export_torchscript(
        copy.deepcopy(full_model), tmp_path / "torchscript_mobilenetv2_fp16.pth", half=True
    )
    assert next(load_torchscript(path).parameters()).dtype == torch.float16
    matter = BGMv2Matter(path, backbone="mobilenetv2", refine_mode="full", device="cpu", precision="fp16")
    assert matter.precision == "fp32" and next(matter.model.parameters()).dtype == torch.float32
    images = np.round(io["src"][0].transpose(1, 2, 0) * 255).astype(np.uint8)[None]
    plates = np.round(io["bgr"][0].transpose(1, 2, 0) * 255).astype(np.uint8)[None]
    alpha, _ = matter(images, plates)
    reference, _ = BGMv2Matter(CHECKPOINT, backbone="mobilenetv2", refine_mode="full", device="cpu")(
        images, plates
    )
    assert 0 < np.abs(alpha - reference).max() < 5e-3  # only the fp16 rounding of the weights differs


# ----------------------------------------------------------------------------------------- batched API


def _frames(n: int, h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth plate plus a bright blob per frame: something with a real matte to predict."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    plate = np.stack([0.5 + 0.3 * np.sin(6 * x + c) * np.cos(4 * y) for c in range(3)], -1)
    images, plates = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        blob = (((y - cy) ** 2 + (x - cx) ** 2) < 0.05).astype(float)[..., None]
        colour = rng.uniform(0, 1, 3)
        images.append(blob * colour + (1 - blob) * plate)
        plates.append(plate)
    to_u8 = lambda a: np.round(np.clip(np.stack(a), 0, 1) * 255).astype(np.uint8)  # noqa: E731
    return to_u8(images), to_u8(plates)


def _direct(model: nn.Module, images: np.ndarray, plates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    src = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    bgr = torch.from_numpy(plates).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        pha, fgr = model(src, bgr)[:2]
    return pha[:, 0].numpy(), fgr.permute(0, 2, 3, 1).numpy()


def test_matter_matches_direct_model_and_is_batch_independent() -> None:
    images, plates = _frames(3, 48, 64, seed=1)
    one = BGMv2Matter(
        CHECKPOINT, backbone="mobilenetv2", refine_sample_pixels=512, device="cpu", batch_size=1
    )
    two = BGMv2Matter(
        CHECKPOINT, backbone="mobilenetv2", refine_sample_pixels=512, device="cpu", batch_size=2
    )
    alpha, foreground = one(images, plates)
    assert alpha.shape == (3, 48, 64) and foreground.shape == (3, 48, 64, 3)
    assert alpha.dtype == np.float32 and foreground.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() <= 1 and foreground.min() >= 0 and foreground.max() <= 1
    alpha2, foreground2 = two(images, plates)
    assert np.abs(alpha - alpha2).max() <= 1e-6 and np.abs(foreground - foreground2).max() <= 1e-6
    direct_alpha, direct_fgr = _direct(one.model, images, plates)
    assert np.abs(alpha - direct_alpha).max() <= 1e-6 and np.abs(foreground - direct_fgr).max() <= 1e-6
    # One plate for all frames is the same as repeating it.
    alpha3, _ = two(images, plates[0])
    assert np.abs(alpha - alpha3).max() <= 1e-6
    assert one.description.startswith("BGMv2 MattingRefine mobilenetv2 (state dict ")
    assert str(CHECKPOINT) in one.description and "sampling 512 px" in one.description
    assert "cpu fp32" in one.description and "RANDOM WEIGHTS" not in one.description


def test_matter_pads_by_edge_replication_and_crops_back() -> None:
    images, plates = _frames(2, 30, 42, seed=2)
    matter = BGMv2Matter(CHECKPOINT, backbone="mobilenetv2", refine_mode="full", device="cpu")
    alpha, foreground = matter(images, plates)
    assert alpha.shape == (2, 30, 42) and foreground.shape == (2, 30, 42, 3)
    padded = [np.pad(a, ((0, 0), (0, 2), (0, 2), (0, 0)), mode="edge") for a in (images, plates)]
    direct_alpha, direct_fgr = _direct(matter.model, *padded)
    assert np.abs(alpha - direct_alpha[:, :30, :42]).max() <= 1e-6
    assert np.abs(foreground - direct_fgr[:, :30, :42]).max() <= 1e-6
    assert (pad_multiple(0.25), pad_multiple(0.125), pad_multiple(0.5), pad_multiple(0.3)) == (4, 8, 4, 4)


def test_matter_rejects_bad_inputs() -> None:
    matter = BGMv2Matter(CHECKPOINT, backbone="mobilenetv2", device="cpu")
    images, plates = _frames(2, 16, 16, seed=3)
    with pytest.raises(TypeError, match="uint8"):
        matter(images.astype(np.float32), plates)
    with pytest.raises(ValueError, match="do not match"):
        matter(images, plates[:, :8])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        matter(images[..., :2], plates)
    with pytest.raises(ValueError, match="refine_mode"):
        BGMv2Matter(CHECKPOINT, backbone="mobilenetv2", refine_mode="everything")
    with pytest.raises(ValueError, match="precision"):
        BGMv2Matter(CHECKPOINT, backbone="mobilenetv2", precision="int8")


# ----------------------------------------------------------------------------------------- random weights


def test_random_checkpoint_loads_strictly_and_is_flagged(tmp_path: Path) -> None:
    path = write_random_checkpoint(tmp_path / "random_mobilenetv2.pth", seed=5)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert (
        len(raw) == 382
        and is_random_checkpoint(raw)
        and not is_random_checkpoint(read_state_dict(CHECKPOINT))
    )
    strict = MattingRefine("mobilenetv2")
    assert not strict.load_state_dict(raw, strict=True).missing_keys
    again = torch.load(write_random_checkpoint(tmp_path / "again.pth", seed=5), weights_only=True)
    assert all(torch.equal(raw[k], again[k]) for k in raw)  # deterministic for a seed
    matter = BGMv2Matter(path, backbone="mobilenetv2", device="cpu")
    assert matter.random_weights and matter.description.endswith("RANDOM WEIGHTS")
    alpha, foreground = matter(*_frames(1, 16, 16, seed=4))
    assert np.isfinite(alpha).all() and np.isfinite(foreground).all()


# ----------------------------------------------------------------------------------------- bad checkpoints


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "pytorch_resnet50.pth"
    with pytest.raises(CheckpointError, match=r"pytorch_resnet50\.pth: file not found") as caught:
        BGMv2Matter(missing, backbone="resnet50", device="cpu")
    assert isinstance(caught.value, Avat3rError) and caught.value.path == missing


def test_truncated_file_is_named(tmp_path: Path) -> None:
    truncated = tmp_path / "pytorch_mobilenetv2.pth"
    truncated.write_bytes(CHECKPOINT.read_bytes()[: CHECKPOINT.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=r"pytorch_mobilenetv2\.pth: cannot be read .*truncated or corrupt"
    ):
        read_state_dict(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes\.pth: cannot be read"):
        load_model(text, "mobilenetv2")


def test_wrong_keys_are_named(tmp_path: Path) -> None:
    state_dict = read_state_dict(CHECKPOINT)
    state_dict["decoder.conv9.weight"] = state_dict.pop("decoder.conv4.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match=r"renamed\.pth") as caught:
        load_model(path, "mobilenetv2")
    message = str(caught.value)
    assert (
        "1 missing keys: decoder.conv4.weight" in message
        and "1 unexpected keys: decoder.conv9.weight" in message
    )

    state_dict = read_state_dict(CHECKPOINT)
    state_dict["decoder.conv4.bias"] = torch.zeros(5)
    torch.save(state_dict, path)
    with pytest.raises(
        CheckpointError, match=r"shape mismatches: decoder\.conv4\.bias \(5,\) vs model \(37,\)"
    ):
        load_model(path, "mobilenetv2")


def test_wrong_backbone_and_refiner_keys_are_named() -> None:
    with pytest.raises(CheckpointError, match="looks like a mobilenetv2 checkpoint, the model is resnet50"):
        load_model(CHECKPOINT, "resnet50")
    # Strict means strict: refiner.* only goes away when asked for explicitly.
    with pytest.raises(CheckpointError, match=r"20 unexpected keys: refiner\.conv1\.weight"):
        load_state_dict_strict(MattingBase("mobilenetv2"), read_state_dict(CHECKPOINT), CHECKPOINT)


def test_not_a_state_dict_is_named(tmp_path: Path, torchscript_file: Path) -> None:
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match=r"list\.pth: holds a list, not a state dict"):
        read_state_dict(listed)
    nested = tmp_path / "nested.pth"
    torch.save({"model": read_state_dict(CHECKPOINT), "epoch": 3}, nested)
    with pytest.raises(
        CheckpointError, match=r"nested\.pth: is not a plain state dict; non-tensor entries: model"
    ):
        read_state_dict(nested)
    with pytest.raises(CheckpointError, match="is a TorchScript archive"):
        read_state_dict(torchscript_file)
    with pytest.raises(CheckpointError, match="backbone mobilenetv2, expected resnet101"):
        BGMv2Matter(torchscript_file, backbone="resnet101", device="cpu")
    other = tmp_path / "linear.pth"
    torch.jit.script(nn.Linear(2, 2)).save(str(other))
    with pytest.raises(
        CheckpointError, match=r"linear\.pth: TorchScript module lacks the BGMv2 export attributes"
    ):
        load_torchscript(other)
    broken = tmp_path / "torchscript_broken.pth"
    shutil.copy(torchscript_file, broken)
    broken.write_bytes(broken.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"torchscript_broken\.pth"):
        BGMv2Matter(broken, backbone="mobilenetv2", device="cpu")


def test_resnet_layouts_build_with_the_expected_key_counts() -> None:
    """No released ResNet file is in the fixtures; check the layouts we would load them into."""
    for backbone, n_keys in (("resnet50", 394), ("resnet101", 700)):
        keys = list(MattingRefine(backbone).state_dict())
        assert len(keys) == n_keys and detect_backbone(keys) == backbone
        assert "backbone.conv1.weight" in keys and not any(k.startswith("backbone.fc") for k in keys)


def test_sampling_budget_larger_than_image_refines_every_patch_with_error(
    full_model: nn.Module, inputs
) -> None:
    """Upstream's topk crashes when sample_pixels // 16 exceeds the 1/4-res cells; we cap it at all cells."""
    model = copy.deepcopy(full_model)
    model.refiner.mode = "sampling"
    model.refiner.sample_pixels = 80_000  # 5000 patches wanted, 256 exist at 64x64
    pha, _, _, _, err_sm, ref_sm = _run(model, *inputs)
    err_quarter = torch.nn.functional.interpolate(torch.from_numpy(err_sm), (16, 16), mode="bilinear")
    np.testing.assert_array_equal(ref_sm, (err_quarter > 0).float().numpy())
    refined = np.kron(ref_sm[0, 0], np.ones((4, 4))).astype(bool)
    assert np.abs(pha - _run(full_model, *inputs)[0])[0, 0][refined].max() <= TOL

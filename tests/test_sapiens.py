"""Sapiens backbone: released-layout loading, parity with independent maths, preprocessing and errors.

Every network here is tiny (width 64, depth 2, 4 heads) and random; the real 2B model needs a GPU and weights
users supply. Parity is checked against a plain-torch forward written from the mmpretrain description (not
from timm), which the tests also trace to TorchScript to stand in for the released lite file.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avat3r_core.errors import Avat3rError
from avat3r_core.models.sapiens import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    SapiensCheckpointError,
    build_sapiens,
    file_kind,
    load_sapiens,
    normalize,
    resize_pos_embed,
    sapiens_config,
    squash_resize,
    to_sapiens_key,
    to_timm_key,
    write_random_sapiens,
)

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4, "img_size": 64}


class ReferenceSapiens(nn.Module):
    """mmpretrain's MAEViT featmap forward in plain torch ops, reading mmpretrain-named tensors.

    patch conv -> [cls; patches] + pos -> per block x + attn(ln1(x)), x + ffn(ln2(x)) with exact GELU ->
    final ln1 -> drop cls -> (N, C, h, w); returns a 1-tuple like the released TorchScript.
    """

    def __init__(self, state: dict[str, Tensor], heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.depth = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        for key, value in state.items():
            self.register_buffer(key.replace(".", "__"), value.detach().clone().float())
        pos = state["pos_embed"].float()
        side = math.isqrt(pos.shape[1] - 1)
        if (side, side) != grid:  # upstream: bicubic, align_corners=False, no antialias, float32
            table = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
            table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :1], table.flatten(2).transpose(1, 2)], dim=1)
        self.register_buffer("pos", pos)

    def p(self, key: str) -> Tensor:
        return getattr(self, key.replace(".", "__"))

    def forward(self, x: Tensor) -> tuple[Tensor]:
        batch = x.shape[0]
        t = F.conv2d(
            x, self.p("patch_embed.projection.weight"), self.p("patch_embed.projection.bias"), stride=16
        )
        gh, gw = t.shape[2], t.shape[3]
        t = t.flatten(2).transpose(1, 2)
        channels = t.shape[2]
        t = torch.cat([self.p("cls_token").expand(batch, -1, -1), t], dim=1) + self.pos
        tokens, head_dim = t.shape[1], channels // self.heads
        for i in range(self.depth):
            pre = f"layers.{i}."
            h = F.layer_norm(t, (channels,), self.p(pre + "ln1.weight"), self.p(pre + "ln1.bias"), 1e-6)
            qkv = F.linear(h, self.p(pre + "attn.qkv.weight"), self.p(pre + "attn.qkv.bias"))
            q, k, v = qkv.reshape(batch, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            attn = ((q @ k.transpose(-2, -1)) / math.sqrt(head_dim)).softmax(dim=-1)
            out = (attn @ v).transpose(1, 2).reshape(batch, tokens, channels)
            t = t + F.linear(out, self.p(pre + "attn.proj.weight"), self.p(pre + "attn.proj.bias"))
            h = F.layer_norm(t, (channels,), self.p(pre + "ln2.weight"), self.p(pre + "ln2.bias"), 1e-6)
            h = F.gelu(
                F.linear(h, self.p(pre + "ffn.layers.0.0.weight"), self.p(pre + "ffn.layers.0.0.bias"))
            )
            t = t + F.linear(h, self.p(pre + "ffn.layers.1.weight"), self.p(pre + "ffn.layers.1.bias"))
        t = F.layer_norm(t, (channels,), self.p("ln1.weight"), self.p("ln1.bias"), 1e-6)
        return (t[:, 1:].reshape(batch, gh, gw, channels).permute(0, 3, 1, 2),)


def _images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def _reference_input(images: np.ndarray) -> Tensor:
    """Hand-written normalisation (x - mean) / std on the 0..255 scale, independent of the module's."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_sapiens(tmp_path_factory.mktemp("sapiens") / "sapiens_tiny_clean.pth", TINY, seed=3)


def _raw(path: Path) -> OrderedDict[str, Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ architecture


def test_configs_match_the_released_sizes() -> None:
    assert sapiens_config("sapiens_2b") == {
        "embed_dim": 1920,
        "depth": 48,
        "num_heads": 32,
        "mlp_ratio": 4.0,
        "patch_size": 16,
        "img_size": 1024,
    }
    assert sapiens_config("1b")["embed_dim"] == 1536
    with torch.device("meta"):
        model = build_sapiens("sapiens_2b")
    assert model.pos_embed.shape == (1, 1 + 64 * 64, 1920)
    assert model.blocks[0].mlp.fc1.out_features == 7680
    assert model.blocks[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert model.blocks[0].attn.qkv.bias is not None
    assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - 2.134) < 0.001
    with pytest.raises(ValueError, match="unknown Sapiens model"):
        sapiens_config("sapiens_5b")


def test_fresh_position_table_is_sincos_with_zero_class_row() -> None:
    model = build_sapiens(TINY)
    pos = model.pos_embed.detach()
    assert not model.pos_embed.requires_grad
    assert torch.equal(pos[0, 0], torch.zeros(64))
    # patch 0 sits at (w=0, h=0): sin terms 0, cos terms 1
    assert torch.equal(
        pos[0, 1], torch.cat([torch.zeros(16), torch.ones(16), torch.zeros(16), torch.ones(16)])
    )


def test_key_mapping_both_ways() -> None:
    pairs = {
        "patch_embed.projection.weight": "patch_embed.proj.weight",
        "layers.7.ln1.bias": "blocks.7.norm1.bias",
        "layers.7.ln2.weight": "blocks.7.norm2.weight",
        "layers.0.attn.qkv.weight": "blocks.0.attn.qkv.weight",
        "layers.0.attn.proj.bias": "blocks.0.attn.proj.bias",
        "layers.12.ffn.layers.0.0.weight": "blocks.12.mlp.fc1.weight",
        "layers.12.ffn.layers.1.bias": "blocks.12.mlp.fc2.bias",
        "ln1.weight": "norm.weight",
        "cls_token": "cls_token",
        "pos_embed": "pos_embed",
    }
    for sapiens_key, timm_key in pairs.items():
        assert to_timm_key(sapiens_key) == timm_key
        assert to_sapiens_key(timm_key) == sapiens_key


# --------------------------------------------------------------------------------------- loading + parity


def test_random_checkpoint_has_released_keys_and_marker(tiny_ckpt: Path) -> None:
    raw = _raw(tiny_ckpt)  # weights-only load works
    assert set(raw) == {to_sapiens_key(k) for k in build_sapiens(TINY).state_dict()}
    assert "ln1.weight" in raw and "layers.1.ffn.layers.0.0.weight" in raw
    extractor = load_sapiens(tiny_ckpt, TINY, input_size=64)
    assert extractor.description.endswith("RANDOM WEIGHTS")
    assert extractor.random_weights


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("layout", ["clean", "prefixed", "state_dict_wrapper", "model_wrapper"])
def test_layouts_load_strictly_and_match_torchscript(tiny_ckpt: Path, tmp_path: Path, layout: str) -> None:
    raw = _raw(tiny_ckpt)
    plain = OrderedDict(raw.items())  # drops the random-weights marker
    prefixed = OrderedDict((f"backbone.{k}", v) for k, v in plain.items())
    prefixed["neck.decoder_pos_embed"] = torch.zeros(1, 17, 32)  # MAE decoder / head entries are dropped
    prefixed["head.loss.weight"] = torch.zeros(1)
    prefixed["data_preprocessor.mean"] = torch.zeros(3, 1, 1)
    obj = {
        "clean": plain,
        "prefixed": prefixed,
        "state_dict_wrapper": {"state_dict": prefixed},
        "model_wrapper": {"model": plain},
    }[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)

    scripted = torch.jit.trace(
        ReferenceSapiens(plain, heads=4, grid=(4, 4)).eval(), torch.zeros(1, 3, 64, 64)
    )
    ts_path = tmp_path / "sapiens_tiny_torchscript.pt2"
    scripted.save(str(ts_path))
    assert file_kind(ts_path) == "torchscript" and file_kind(path) == "state_dict"

    images = _images(3, 64, 64)
    ours = load_sapiens(path, TINY, input_size=64)
    lite = load_sapiens(ts_path, input_size=64)
    assert "RANDOM WEIGHTS" not in ours.description
    feats = ours(images)
    assert feats.shape == (3, 64, 4, 4) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, lite(images), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("input_size", [64, (64, 48), 128])
def test_timm_path_equals_independent_maths(tiny_ckpt: Path, input_size: int | tuple[int, int]) -> None:
    """Same-grid, non-square and larger inputs: the resized table must match upstream's bicubic."""
    raw = _raw(tiny_ckpt)
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    extractor = load_sapiens(tiny_ckpt, TINY, input_size=size)
    images = _images(2, *size, seed=1)
    reference = ReferenceSapiens(raw, heads=4, grid=(size[0] // 16, size[1] // 16))
    expected = reference(_reference_input(images))[0]
    torch.testing.assert_close(extractor(images), expected, atol=1e-5, rtol=1e-5)


def test_batches_equal_single_images(tiny_ckpt: Path) -> None:
    extractor = load_sapiens(tiny_ckpt, TINY, input_size=64, batch_size=2)
    images = _images(5, 64, 64, seed=2)
    together = extractor(images)
    alone = torch.cat([extractor(images[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert extractor(torch.from_numpy(images)).shape == (5, 64, 4, 4)  # torch input too


def test_position_table_resize() -> None:
    pos = torch.randn(1, 1 + 4 * 4, 8)
    assert resize_pos_embed(pos, 4) is pos
    out = resize_pos_embed(pos, (8, 6))
    assert out.shape == (1, 1 + 8 * 6, 8)
    assert torch.equal(out[:, 0], pos[:, 0])  # class row untouched
    grid = pos[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(8, 6), mode="bicubic", align_corners=False, antialias=False)
    torch.testing.assert_close(out[:, 1:], expected.flatten(2).transpose(1, 2), atol=0, rtol=0)
    constant = torch.full((1, 17, 8), 0.25)
    torch.testing.assert_close(resize_pos_embed(constant, 7), torch.full((1, 50, 8), 0.25))
    half = resize_pos_embed(pos.to(torch.bfloat16), 8)
    assert half.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------- errors


def _save_variant(tiny_ckpt: Path, tmp_path: Path, edit: str) -> Path:
    raw = OrderedDict(_raw(tiny_ckpt).items())
    if edit == "missing":
        del raw["layers.1.ln2.weight"]
    elif edit == "unexpected":
        raw["layers.0.attn.gamma1.weight"] = torch.ones(64)
    elif edit == "shape":
        raw["layers.0.attn.proj.bias"] = torch.zeros(65)
    path = tmp_path / f"{edit}.pth"
    torch.save(raw, path)
    return path


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        ("missing", r"1 missing keys: layers\.1\.ln2\.weight"),
        ("unexpected", r"1 unexpected keys: layers\.0\.attn\.gamma1\.weight"),
        ("shape", r"layers\.0\.attn\.proj\.bias \(65,\) in file vs \(64,\) in model"),
    ],
)
def test_key_errors_are_named(tiny_ckpt: Path, tmp_path: Path, edit: str, pattern: str) -> None:
    path = _save_variant(tiny_ckpt, tmp_path, edit)
    with pytest.raises(SapiensCheckpointError, match=pattern) as info:
        load_sapiens(path, TINY, input_size=64)
    assert str(path) in str(info.value)


def test_wrong_model_name_is_a_named_error(tiny_ckpt: Path) -> None:
    with pytest.raises(SapiensCheckpointError, match="shape mismatch: cls_token"):
        load_sapiens(tiny_ckpt, {**TINY, "embed_dim": 32, "num_heads": 2}, input_size=64)


def test_corrupt_and_missing_files_name_the_file(tiny_ckpt: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated_clean.pth"
    truncated.write_bytes(tiny_ckpt.read_bytes()[:3000])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, garbage):
        with pytest.raises(Avat3rError, match=str(path)):
            load_sapiens(path, TINY, input_size=64)
    with pytest.raises(SapiensCheckpointError, match="file not found"):
        load_sapiens(tmp_path / "absent.pth", TINY)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(SapiensCheckpointError, match="not a state dict"):
        load_sapiens(listing, TINY)


# ----------------------------------------------------------------------------------------- preprocessing


def test_normalisation_matches_hand_values() -> None:
    assert IMAGENET_MEAN_255 == (123.675, 116.28, 103.53)
    assert IMAGENET_STD_255 == (58.395, 57.12, 57.375)
    pixel = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 2, 3, 3)
    out = normalize(pixel)
    assert out.shape == (2, 3, 2, 3)
    # (255 - 123.675) / 58.395, (0 - 116.28) / 57.12, (128 - 103.53) / 57.375
    hand = torch.tensor([2.2489083, -2.0357143, 0.4264924])
    torch.testing.assert_close(out[0, :, 1, 2], hand, atol=1e-6, rtol=0)
    # the same as torchvision-style (x/255 - mean) / std
    torchvision_style = (
        torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor([0.485, 0.456, 0.406])
    ) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[1, :, 0, 0], torchvision_style, atol=1e-5, rtol=0)


def test_squash_ignores_aspect_ratio() -> None:
    image = np.zeros((1, 16, 64, 3), dtype=np.uint8)  # wide: left half red, right half blue
    image[:, :, :32, 0] = 200
    image[:, :, 32:, 2] = 100
    out = squash_resize(image, 64)
    assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8
    assert (out == out[:, :1]).all()  # every row identical: stretched vertically, not padded or cropped
    assert (out[0, :, :28] == [200, 0, 0]).all()
    assert (out[0, :, 36:] == [0, 0, 100]).all()
    assert squash_resize(image, (16, 64)) is image  # already the right size


def test_crop_upsampled_to_1024_gives_64x64(tmp_path: Path) -> None:
    path = write_random_sapiens(tmp_path / "tiny1024_clean.pth", {**TINY, "img_size": 1024})
    extractor = load_sapiens(path, TINY, input_size=1024)
    crop = _images(1, 512, 512, seed=4)
    upsampled = crop.repeat(2, axis=1).repeat(2, axis=2)
    assert extractor(upsampled).shape == (1, 64, 64, 64)
    assert extractor(crop).shape == (1, 64, 64, 64)  # squashed to 1024 internally
    with pytest.raises(ValueError, match="uint8"):
        extractor(crop.astype(np.float32))


# ------------------------------------------------------------------------------------- exported program


def test_bf16_exported_program_path(tiny_ckpt: Path, tmp_path: Path) -> None:
    """The bf16 ExportedProgram loader, exercised with a CPU export (the released file is a CUDA one)."""
    started = time.monotonic()
    reference = ReferenceSapiens(_raw(tiny_ckpt), heads=4, grid=(4, 4)).eval().to(torch.bfloat16)
    example = torch.zeros(2, 3, 64, 64, dtype=torch.bfloat16)
    batch = torch.export.Dim("batch", min=1, max=64)
    try:
        program = torch.export.export(reference, (example,), dynamic_shapes={"x": {0: batch}})
    except Exception as exc:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.export unavailable here: {exc}")
    path = tmp_path / "sapiens_tiny_bfloat16.pt2"
    torch.export.save(program, str(path))
    assert file_kind(path) == "exported"
    extractor = load_sapiens(path, input_size=64)
    assert "bfloat16" in extractor.description
    images = _images(3, 64, 64, seed=5)
    expected = ReferenceSapiens(_raw(tiny_ckpt), heads=4, grid=(4, 4))(_reference_input(images))[0]
    feats = extractor(images)
    assert feats.dtype == torch.float32 and feats.shape == (3, 64, 4, 4)
    torch.testing.assert_close(feats, expected, atol=0.15, rtol=0.05)  # bf16 end to end
    assert time.monotonic() - started < 20

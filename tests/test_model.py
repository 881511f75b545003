"""The Avat3r network on the tiny config: shapes, encode/decode caching, initial state, switches, symmetry.

Inputs are batches in the loader's collated layout, built from real pinhole cameras around the origin (so
Plücker rays and ``input_w2c`` agree, as they do in the shards). Everything runs at 32² crops, a 4x4 token
grid, in well under a second per test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from avat3r_core.geometry.cameras import Camera
from avat3r_core.geometry.rays import plucker_rays
from avat3r_core.geometry.transforms import look_at_w2c
from avat3r_core.recon.gaussian_heads import GaussianMaps
from avat3r_core.recon.layers import Upsampler, UpsampleStep, pixel_shuffle_views, windowed_attention
from avat3r_core.recon.model import Avat3rModel, EncodedViews, ModelConfig

S = 32
# upsample_window 16 < the 64 tokens per view after one 2x step, so windows and shifts are exercised.
CFG = ModelConfig.tiny(upsample_window=16)


def make_batch(
    cfg: ModelConfig, b: int = 2, v: int = 4, s: int = S, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A collated batch: cameras 1.1 m from a head at the origin, random images, maps and codes."""
    rng = np.random.default_rng(seed)
    plucker, w2cs, ks = [], [], []
    for _ in range(b * v):
        azimuth, elevation = rng.uniform(-1.2, 1.2), rng.uniform(-0.4, 0.4)
        eye = 1.1 * np.array(
            [
                math.sin(azimuth) * math.cos(elevation),
                math.sin(elevation),
                math.cos(azimuth) * math.cos(elevation),
            ]
        )
        k = np.array([[2.0 * s, 0.0, s / 2], [0.0, 2.0 * s, s / 2], [0.0, 0.0, 1.0]])
        w2c = look_at_w2c(eye, np.zeros(3), np.array([0.0, 1.0, 0.0]))
        plucker.append(plucker_rays(Camera(K=k, w2c=w2c, width=s, height=s)).transpose(2, 0, 1))
        w2cs.append(w2c)
        ks.append(k)
    g = torch.Generator().manual_seed(seed)
    grid = s // cfg.patch_size

    def t(array: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(array).astype(np.float32)).reshape(b, v, *array[0].shape)

    return {
        "input_rgb": torch.rand(b, v, 3, s, s, generator=g),
        "plucker": t(plucker),
        "position": 0.1 * torch.randn(b, v, 3, s, s, generator=g),
        "confidence": torch.rand(b, v, 1, s, s, generator=g),
        "features": torch.randn(b, v, cfg.feature_dim, grid, grid, generator=g),
        "input_K": t(ks),
        "input_w2c": t(w2cs),
        "expression": torch.randn(b, cfg.expression_dim, generator=g),
    }


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 1, 3, 4, 2)


def model_for(cfg: ModelConfig, seed: int = 0) -> Avat3rModel:
    torch.manual_seed(seed)
    return Avat3rModel(cfg).eval()


def permute_views(batch: dict[str, torch.Tensor], order: list[int]) -> dict[str, torch.Tensor]:
    return {k: (x[:, order] if k != "expression" else x) for k, x in batch.items()}


@pytest.mark.parametrize("views", [1, 2, 4])
def test_output_shapes(views: int) -> None:
    model = model_for(CFG)
    with torch.no_grad():
        out = model(make_batch(CFG, b=2, v=views))
    assert isinstance(out, GaussianMaps)
    lead = (2, views, S, S)
    assert out.means.shape == (*lead, 3)
    assert out.quats.shape == (*lead, 4)
    assert out.scales.shape == (*lead, 3)
    assert out.opacities.shape == lead
    assert out.colors.shape == (*lead, 3)
    assert out.keep.shape == lead and out.keep.dtype == torch.bool
    assert torch.allclose(out.quats.norm(dim=-1), torch.ones(lead), atol=1e-5)
    assert (out.scales >= CFG.scale_min).all() and (out.scales <= CFG.scale_max).all()
    assert (out.opacities > 0).all() and (out.opacities < 1).all()
    scene = out.scene(1)
    n = int(out.keep[1].sum())
    assert scene.means.shape == (n, 3) and scene.quats.shape == (n, 4) and scene.scales.shape == (n, 3)
    assert scene.opacities.shape == (n,) and scene.colors.shape == (n, 3)
    assert scene._fields == ("means", "quats", "scales", "opacities", "colors")
    assert [len(sc.means) for sc in out.scenes()] == out.keep.flatten(1).sum(1).tolist()


def test_encode_decode_equals_forward_and_cache_ignores_expression() -> None:
    model = model_for(CFG)
    batch = make_batch(CFG)
    with torch.no_grad():
        full = model(batch)
        no_expression = {k: x for k, x in batch.items() if k != "expression"}
        cache = model.encode(no_expression)  # encode never reads the expression
        assert isinstance(cache, EncodedViews)
        split = model.decode(cache, batch["expression"])
        for name in ("means", "quats", "scales", "opacities", "colors", "keep"):
            assert torch.equal(getattr(full, name), getattr(split, name)), name
        other = model.decode(cache, torch.randn_like(batch["expression"]))
        cache_again = model.encode({**batch, "expression": torch.randn_like(batch["expression"])})
    assert torch.equal(cache.tokens, cache_again.tokens)
    assert not torch.equal(other.opacities, split.opacities)
    assert not torch.equal(other.scales, split.scales)


def test_cache_of_one_avatar_drives_a_batch_of_expressions() -> None:
    model = model_for(CFG)
    batch = make_batch(CFG, b=1, v=2)
    codes = torch.randn(3, CFG.expression_dim)
    with torch.no_grad():
        cache = model.encode(batch)
        together = model.decode(cache, codes)
        one = [model.decode(cache, codes[i : i + 1]) for i in range(3)]
    assert together.means.shape[0] == 3
    for i in range(3):
        assert torch.allclose(together.scales[i], one[i].scales[0], atol=1e-6)


def test_untrained_model_reproduces_input_positions_and_colours() -> None:
    model = model_for(CFG)
    batch = make_batch(CFG)
    with torch.no_grad():
        out = model(batch)
        sig = model_for(CFG.replace(colour_activation="sigmoid"))(batch)
    assert torch.equal(out.means, channels_last(batch["position"]))
    assert torch.equal(out.colors, channels_last(batch["input_rgb"]))
    assert torch.allclose(sig.colors, channels_last(batch["input_rgb"]), atol=1e-4)
    assert torch.allclose(out.scales.mean(), torch.tensor(CFG.scale_init), rtol=0.2)
    assert torch.allclose(out.opacities.mean(), torch.sigmoid(torch.tensor(-2.0)), atol=0.02)


def test_keep_is_the_confidence_filter() -> None:
    batch = make_batch(CFG)
    for threshold in (0.5, 0.2):
        model = model_for(CFG.replace(confidence_threshold=threshold))
        with torch.no_grad():
            out = model(batch)
        assert torch.equal(out.keep, batch["confidence"][:, :, 0] >= threshold)
        assert int(out.keep.sum()) == sum(len(sc.means) for sc in out.scenes())


def test_without_features_there_is_no_feature_projection() -> None:
    with_feats, without = Avat3rModel(CFG), Avat3rModel(CFG.replace(use_features=False))
    assert without.feature_proj is None and without.feature_norm is None
    d, c = CFG.width, CFG.feature_dim
    assert with_feats.num_parameters() - without.num_parameters() == c * d + d + 2 * c
    batch = make_batch(CFG)
    del batch["features"]
    with torch.no_grad():
        out = without.eval()(batch)
    assert out.means.shape == (2, 4, S, S, 3)


def test_features_on_another_grid_are_resampled_bilinearly() -> None:
    model = model_for(CFG)
    batch = make_batch(CFG)
    fine = torch.randn(2, 4, CFG.feature_dim, 8, 8)
    coarse = F.interpolate(fine.flatten(0, 1), size=(4, 4), mode="bilinear", align_corners=False)
    with torch.no_grad():
        a = model.encode({**batch, "features": fine}).tokens
        b = model.encode({**batch, "features": coarse.reshape(2, 4, -1, 4, 4)}).tokens
    assert torch.allclose(a, b, atol=1e-5)


def _assert_on_rays(out: GaussianMaps, batch: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    w2c = batch["input_w2c"]
    centre = -torch.einsum("bvji,bvj->bvi", w2c[..., :3, :3], w2c[..., :3, 3])
    rel = out.means - centre[:, :, None, None, :]
    d = channels_last(batch["plucker"][:, :, 3:6])
    assert torch.cross(rel, d, dim=-1).norm(dim=-1).max() < 1e-5  # collinear with the pixel's ray
    depth = (rel * d).sum(-1)
    assert (depth >= cfg.depth_near - 1e-5).all() and (depth <= cfg.depth_far + 1e-5).all()


def test_without_positions_means_lie_on_the_input_rays() -> None:
    cfg = CFG.replace(use_positions=False)
    model = model_for(cfg)
    assert model.in_channels == 9 and model.tokenizer.weight.shape[1] == 9
    assert model_for(CFG).tokenizer.weight.shape[1] == 12
    # 3 fewer input channels in the patch embedding; a 1-channel depth head instead of a 3-channel offset
    patch, r2, c_up = CFG.patch_size**2, model.heads.upscale**2, model.upsampler.out_width
    expected = 3 * patch * CFG.width + (3 - 1) * r2 * (c_up + 1)
    assert Avat3rModel(CFG).num_parameters() - Avat3rModel(cfg).num_parameters() == expected
    batch = make_batch(cfg)
    without = {k: x for k, x in batch.items() if k not in ("position", "confidence")}
    with torch.no_grad():
        out = model(without)
    assert out.keep.all()  # no confidence filter without position maps
    _assert_on_rays(out, batch, cfg)


def test_without_position_skip_means_lie_on_the_input_rays() -> None:
    cfg = CFG.replace(position_skip=False)
    model = model_for(cfg)
    assert model.tokenizer.weight.shape[1] == 12  # the position map is still an input
    batch = make_batch(cfg)
    with torch.no_grad():
        out = model(batch)
    _assert_on_rays(out, batch, cfg)
    assert torch.equal(out.keep, batch["confidence"][:, :, 0] >= cfg.confidence_threshold)


def test_without_colour_skip_colours_are_absolute() -> None:
    model = model_for(CFG.replace(colour_skip=False))
    batch = make_batch(CFG)
    with torch.no_grad():
        out = model(batch)
    assert not torch.allclose(out.colors, channels_last(batch["input_rgb"]), atol=0.1)
    assert (out.colors - 0.5).abs().max() < 0.4  # sigmoid of a small initial output


def test_views_are_symmetric_apart_from_the_view_encoding() -> None:
    batch = make_batch(CFG, v=4)
    order = [2, 0, 3, 1]
    symmetric = model_for(CFG.replace(view_encoding=False))
    with torch.no_grad():
        a, b = symmetric(batch), symmetric(permute_views(batch, order))
    for name in ("means", "quats", "scales", "opacities", "colors", "keep"):
        assert torch.allclose(getattr(a, name)[:, order], getattr(b, name), atol=1e-5), name

    # The learned per-view encoding tags views by their slot, so a permutation changes the result ...
    encoded = model_for(CFG)
    with torch.no_grad():
        a, b = encoded(batch), encoded(permute_views(batch, order))
        assert not torch.allclose(a.scales[:, order], b.scales, atol=1e-6)
        # ... and only through it: with equal rows the model is symmetric again.
        encoded.view_embed.copy_(encoded.view_embed[:1].expand_as(encoded.view_embed))
        a, b = encoded(batch), encoded(permute_views(batch, order))
    assert torch.allclose(a.scales[:, order], b.scales, atol=1e-6)


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(use_positions=False, cross_self_attention=True)])
def test_gradients_reach_every_parameter(cfg: ModelConfig) -> None:
    torch.manual_seed(1)
    model = Avat3rModel(cfg).train()
    batch = make_batch(cfg, v=3)
    out = model(batch)
    loss = sum(
        (getattr(out, name) * torch.randn_like(getattr(out, name))).sum()
        for name in ("means", "quats", "scales", "opacities", "colors")
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        grad = p.grad[:3] if name == "view_embed" else p.grad  # only the slots of the 3 views are used
        assert grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    batch = make_batch(CFG, v=2)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(2)
        model = Avat3rModel(CFG).train()
        model.set_gradient_checkpointing(checkpointing)
        out = model(batch)
        (out.scales.sum() + out.means.square().sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_from_dict_rejects_unknown_keys_and_round_trips() -> None:
    with pytest.raises(ValueError, match=r"unknown ModelConfig key.*'widht'"):
        ModelConfig.from_dict({"widht": 64})
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="not divisible by heads"):
        ModelConfig.tiny(heads=3)
    with pytest.raises(ValueError, match="scale_min < scale_init < scale_max"):
        ModelConfig.tiny(scale_init=1.0)


def test_rejects_too_many_views() -> None:
    model = model_for(CFG.replace(max_views=2))
    with pytest.raises(ValueError, match=r"supports 1\.\.2"):
        model.encode(make_batch(CFG, b=1, v=3))


def test_paper_config_on_the_meta_device() -> None:
    cfg = ModelConfig.paper()
    assert (cfg.width, cfg.self_layers, cfg.cross_layers, cfg.heads, cfg.patch_size) == (768, 8, 8, 12, 8)
    assert (cfg.image_size, cfg.feature_dim, cfg.expression_dim, cfg.expression_tokens) == (512, 1920, 256, 4)
    with torch.device("meta"):
        model = Avat3rModel(cfg)
    n = model.num_parameters()
    print(f"paper config: {n:,} parameters")
    assert 110e6 < n < 140e6
    assert model.upsampler.out_width == 384 and model.heads.upscale == 4


def test_pixel_shuffle_keeps_each_token_in_its_own_block_of_its_own_view() -> None:
    torch.manual_seed(3)
    step = UpsampleStep(in_width=8, out_width=4, layers=0, head_dim=4, window=None)
    x = torch.randn(3, 4, 5, 8)  # 3 views (B·V) of a 4x5 token grid
    base = step.shuffle(x)
    assert base.shape == (3, 8, 10, 4)
    view, i, j = 1, 2, 3
    bumped = x.clone()
    bumped[view, i, j] += 1.0
    changed = (step.shuffle(bumped) - base).abs().sum(-1) > 0
    expected = torch.zeros(3, 8, 10, dtype=torch.bool)
    expected[view, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = True
    assert torch.equal(changed, expected)
    # Channel c·4 + a·2 + b goes to sub-pixel (a, b) of channel c.
    grid = torch.arange(2 * 1 * 1 * 8, dtype=torch.float32).reshape(2, 1, 1, 8)
    out = pixel_shuffle_views(grid, 2)
    assert out[1, 1, 0, 1].item() == grid[1, 0, 0, 1 * 4 + 1 * 2 + 0].item()


def test_heads_shuffle_each_grid_cell_to_its_own_pixel_block() -> None:
    model = model_for(CFG)
    r = model.heads.upscale
    x = torch.randn(2, 8, 8, model.upsampler.out_width)
    for head in model.heads.heads.values():
        torch.nn.init.normal_(head.weight)
    base = model.heads.raw(x)
    bumped = x.clone()
    bumped[1, 5, 2] += 1.0
    after = model.heads.raw(bumped)
    expected = torch.zeros(2, 8 * r, 8 * r, dtype=torch.bool)
    expected[1, 5 * r : 6 * r, 2 * r : 3 * r] = True
    for name in base:
        assert torch.equal((after[name] - base[name]).abs().sum(-1) > 0, expected), name


def test_upsampler_keeps_views_apart() -> None:
    torch.manual_seed(4)
    up = Upsampler(width=32, steps=1, layers=2, head_dim=8, window=16, min_width=16).eval()
    x = torch.randn(4, 4, 4, 32)  # B·V = 4 view grids
    y = x.clone()
    y[2] += torch.randn(4, 4, 32)
    with torch.no_grad():
        a, b = up(x), up(y)
    assert a.shape == (4, 8, 8, 16)
    assert torch.equal(a[[0, 1, 3]], b[[0, 1, 3]]) and not torch.allclose(a[2], b[2])


@pytest.mark.parametrize("length", [64, 70])
def test_windowed_attention_matches_explicit_windows(length: int) -> None:
    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 3, length, 8) for _ in range(3))
    window = 16

    def explicit(cuts: list[int]) -> torch.Tensor:
        pieces = [
            F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b])
            for a, b in itertools.pairwise(cuts)
        ]
        return torch.cat(pieces, dim=2)

    plain = [*range(0, length, window), length]
    shifted = [0, *range(window // 2, length, window), length]
    assert torch.allclose(windowed_attention(q, k, v, window, False), explicit(plain), atol=1e-6)
    assert torch.allclose(windowed_attention(q, k, v, window, True), explicit(shifted), atol=1e-6)
    full = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(windowed_attention(q, k, v, None, True), full)
    assert torch.allclose(windowed_attention(q, k, v, length, True), full)


@pytest.mark.parametrize("steps", [0, 2])
def test_other_upsampling_depths_still_give_one_gaussian_per_pixel(steps: int) -> None:
    cfg = CFG.replace(upsample_steps=steps)
    model = model_for(cfg)
    assert model.heads.upscale == cfg.patch_size // 2**steps
    with torch.no_grad():
        out = model(make_batch(cfg, b=1, v=2))
    assert out.means.shape == (1, 2, S, S, 3)

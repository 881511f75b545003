"""The Zarr store layer: round trips, few files, atomic replacement, reproducible bytes, manifest checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import avat3r_core
from avat3r_core.cli import main
from avat3r_core.errors import Avat3rError
from avat3r_core.store.codecs import AVIF_CODEC_NAME, JPEG_CODEC_NAME, AvifCodec, JpegCodec
from avat3r_core.store.manifest import array_checksum, read_manifest, stored_checksum, verify_store
from avat3r_core.store.zarr_store import StoreError, open_store, read_block, store_attrs, write_store

CONFIG = {"crop": {"input_size": 512, "supervision_size": 667}, "seed": 3}


def smooth_textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients and sinusoids plus mild fine texture: what a head crop looks like to a codec."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            128 + 90 * np.sin(x / 23.0 + seed),
            128 + 80 * np.cos(y / 17.0),
            128 + 60 * np.sin((x + y) / 11.0),
        ],
        axis=-1,
    )
    texture = 6 * np.sin(x / 2.5)[..., None] * np.cos(y / 3.0)[..., None] + rng.normal(0, 1.5, base.shape)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


def image_stack(cameras: int, timesteps: int, height: int = 40, width: int = 32) -> np.ndarray:
    images = np.empty((cameras, timesteps, height, width, 3), np.uint8)
    for c in range(cameras):
        for t in range(timesteps):
            images[c, t] = smooth_textured(height, width, seed=c * 100 + t)
    return images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def write_example(path: Path, images: np.ndarray) -> None:
    with write_store(path, stage="crop", subject="S001", config=CONFIG) as writer:
        rgb = writer.create_images("rgb", images.shape, attrs={"camera_ids": ["400012", "400015"]})
        for camera in range(images.shape[0]):
            rgb[camera] = images[camera]  # one shard per assignment
        writer.create_images("rgb_avif", images.shape, codec="avif", quality=90)[...] = images
        writer.write_array("K", np.tile(np.eye(3, dtype=np.float32), (images.shape[0], 1, 1)))
        writer.write_array("camera_ids", np.array([f"4000{i:02d}" for i in range(images.shape[0])]))
        writer.write_array("valid", np.ones(images.shape[:2], bool))


# -- round trips -------------------------------------------------------------------------------------------
def test_zstd_images_round_trip_exactly(tmp_path: Path) -> None:
    images = image_stack(3, 4)
    alpha = (images[..., 0] > 128).astype(np.uint8) * 255  # (cam, t, H, W): single-channel images
    depth = images[..., 1].astype(np.float32) / 7.0
    with write_store(tmp_path / "s.zarr", stage="matting", subject="S001", config=CONFIG) as writer:
        writer.create_images("rgb", images.shape)[...] = images
        writer.create_images("alpha", alpha.shape, shard_axes=2)[...] = alpha
        writer.create_images("depth", depth.shape, dtype="float32", shard_axes=0)[...] = depth
    group = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(group["rgb"][...], images)
    np.testing.assert_array_equal(group["alpha"][...], alpha)
    np.testing.assert_array_equal(group["depth"][...], depth)
    assert group["rgb"].chunks == (1, 1, 40, 32, 3)  # one image per chunk
    assert group["rgb"].shards == (1, 4, 40, 32, 3)  # one shard per camera
    assert group["alpha"].chunks == (1, 1, 40, 32) and group["alpha"].shards == (1, 1, 40, 32)
    assert group["depth"].shards == (3, 4, 40, 32)  # shard_axes=0: one shard for the whole array
    np.testing.assert_array_equal(group["rgb"][2, 1], images[2, 1])  # one image decodes alone


def test_avif_round_trip_quality_and_codec_metadata(tmp_path: Path) -> None:
    images = np.stack([smooth_textured(96, 80, seed=s) for s in range(3)])[None]  # (1, 3, H, W, 3)
    with write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config=CONFIG) as writer:
        writer.create_images("rgb", images.shape, codec="avif", quality=90)[...] = images
    decoded = open_store(tmp_path / "s.zarr")["rgb"][...]
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    assert psnr(decoded, images) > 35.0
    meta = json.loads((tmp_path / "s.zarr" / "rgb" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert inner == [
        {"name": AVIF_CODEC_NAME, "configuration": AvifCodec(quality=90).to_dict()["configuration"]}
    ]
    # Plain zarr finds the codec through its registry, as any environment with the package installed would.
    assert zarr.registry.get_codec_class(AVIF_CODEC_NAME) is AvifCodec
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "rgb", mode="r")[...], decoded)


def test_jpeg_round_trip_quality_determinism_and_codec_metadata(tmp_path: Path) -> None:
    images = np.stack([smooth_textured(96, 80, seed=s) for s in range(3)])[None]  # (1, 3, H, W, 3)
    with write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config=CONFIG) as writer:
        writer.create_images("rgb", images.shape, codec="jpeg", quality=95)[...] = images
    decoded = open_store(tmp_path / "s.zarr")["rgb"][...]
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    assert psnr(decoded, images) > 35.0
    assert not np.array_equal(decoded, images)  # lossy: a zstd pipeline by mistake would be exact
    meta = json.loads((tmp_path / "s.zarr" / "rgb" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner == [{"name": JPEG_CODEC_NAME, "configuration": {"quality": 95, "subsampling": "4:4:4"}}]
    assert zarr.registry.get_codec_class(JPEG_CODEC_NAME) is JpegCodec
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr" / "rgb", mode="r")[...], decoded)
    codec = JpegCodec(quality=95)
    assert codec.encode_pixels(images[0, 0]) == codec.encode_pixels(images[0, 0].copy())  # same bytes
    # 4:4:4 keeps colour at full resolution: a one-pixel red line on black keeps its hue (4:2:0 smears it)
    line = np.zeros((16, 16, 3), np.uint8)
    line[:, 8, 0] = 255
    full = codec.decode_pixels(codec.encode_pixels(line), line.shape)
    half = JpegCodec(quality=95, subsampling="4:2:0")
    smeared = half.decode_pixels(half.encode_pixels(line), line.shape)
    assert np.abs(full.astype(int) - line).max() < np.abs(smeared.astype(int) - line).max()
    with pytest.raises(ValueError, match="corrupt JPEG"):
        codec.decode_pixels(b"not a jpeg", (16, 16, 3))


@pytest.mark.parametrize("codec", ["avif", "jpeg"])
def test_lossy_codecs_refuse_what_they_cannot_encode(tmp_path: Path, codec: str) -> None:
    with (
        pytest.raises(StoreError, match=f"{codec} needs uint8"),
        write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config=CONFIG) as writer,
    ):
        writer.create_images("depth", (2, 8, 8, 3), dtype="float32", codec=codec)
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(ValueError, match="subsampling"):
        JpegCodec(subsampling="4:1:1")
    with pytest.raises(ValueError, match="quality"):
        JpegCodec(quality=0)


def test_avif_refuses_what_it_cannot_encode(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="avif needs uint8"),
        write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config=CONFIG) as writer,
    ):
        writer.create_images("depth", (2, 8, 8, 3), dtype="float32", codec="avif")
    with pytest.raises(ValueError, match="quality"):
        AvifCodec(quality=101)
    assert not (tmp_path / "s.zarr").exists()


def test_small_arrays_and_attributes(tmp_path: Path) -> None:
    w2c = np.random.default_rng(1).normal(size=(5, 4, 4))
    ids = np.array(["400012", "400015", "400029"])
    frames = np.array([0, 12, 25], np.int64)
    extra = {"backend": "plate_difference", "threshold": np.float32(0.25), "cameras": ("a", "b")}
    with write_store(
        tmp_path / "s.zarr", stage="matting", subject="S001", config=CONFIG, extra_attrs=extra
    ) as w:
        w.write_array("w2c", w2c, attrs={"frame": "head-centric"})
        w.write_array("ids", ids)
        w.write_array("frames", frames)
        w.write_array("valid", np.array([[True, False, True]]))
        w.write_array("scale", np.float64(2.5))
        w.write_array("nested/empty", np.zeros((0, 3), np.float32))
        w.set_attrs(random_weights=True)
    group = open_store(tmp_path / "s.zarr")
    np.testing.assert_array_equal(group["w2c"][...], w2c)
    np.testing.assert_array_equal(group["ids"][...], ids)
    np.testing.assert_array_equal(group["frames"][...], frames)
    np.testing.assert_array_equal(group["valid"][...], [[True, False, True]])
    assert group["scale"][()] == 2.5 and group["nested/empty"].shape == (0, 3)
    assert group["w2c"].attrs["frame"] == "head-centric"
    assert group["w2c"].chunks == (5, 4, 4)  # small arrays: one chunk
    attrs = store_attrs(tmp_path / "s.zarr")
    assert attrs == {
        "stage": "matting",
        "subject": "S001",
        "config": CONFIG,
        "code_version": avat3r_core.__version__,
        "random_weights": True,
        "backend": "plate_difference",
        "threshold": 0.25,
        "cameras": ["a", "b"],
    }
    with (
        pytest.raises(StoreError, match="object"),
        write_store(tmp_path / "t.zarr", stage="x", subject="S001", config={}) as w,
    ):
        w.write_array("names", np.array(["a", None], dtype=object))


def test_random_weights_must_be_a_bool(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="random_weights"),
        write_store(tmp_path / "s.zarr", stage="features", subject="S001", config={}) as writer,
    ):
        writer.set_attrs(random_weights="maybe")
    assert not (tmp_path / "s.zarr").exists()


def test_provenance_cannot_be_overwritten(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="extra_attrs may not set"),
        write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config={}, extra_attrs={"stage": "x"}),
    ):
        pass
    with (
        pytest.raises(StoreError, match="set by write_store"),
        write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config={}) as writer,
    ):
        writer.set_attrs(subject="S002")
    assert not (tmp_path / "s.zarr").exists()


# -- few files ---------------------------------------------------------------------------------------------
def test_file_count_stays_small(tmp_path: Path) -> None:
    """8 cameras x 12 timesteps x 2 image arrays = 192 images. Unsharded that is 192 chunk files; sharded per
    camera it is 8 shard files + 1 zarr.json per image array, plus the 3 small arrays (zarr.json + 1 chunk
    each), the root zarr.json and the manifest: 2 * 9 + 3 * 2 + 2 = 26 files, independent of the number of
    timesteps. A `.snakemake_timestamp` later makes 27.
    """
    images = image_stack(8, 12, 16, 16)
    write_example(tmp_path / "s.zarr", images)
    files = files_under(tmp_path / "s.zarr")
    assert len(files) <= 26, [str(f.relative_to(tmp_path)) for f in files]
    shards = [f for f in files if f.parent.name == "rgb" and f.name != "zarr.json"]
    assert len(shards) == 8


def test_images_per_shard_bounds_shards(tmp_path: Path) -> None:
    images = image_stack(2, 10, 8, 8)
    with write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config={}) as writer:
        array = writer.create_images("rgb", images.shape, images_per_shard=4)
        for start in range(0, 10, 4):
            array[:, start : start + 4] = images[:, start : start + 4]
    group = open_store(tmp_path / "s.zarr")
    assert group["rgb"].shards == (1, 4, 8, 8, 3)
    np.testing.assert_array_equal(group["rgb"][...], images)
    assert len([f for f in files_under(tmp_path / "s.zarr" / "rgb") if f.name != "zarr.json"]) == 2 * 3


# -- atomicity and determinism -----------------------------------------------------------------------------
def test_exception_leaves_nothing_and_keeps_the_old_store(tmp_path: Path) -> None:
    final = tmp_path / "s.zarr"
    with (
        pytest.raises(RuntimeError, match="boom"),
        write_store(final, stage="crop", subject="S001", config={}) as writer,
    ):
        writer.create_images("rgb", (2, 8, 8, 3))[...] = 7
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary sibling left behind

    with write_store(final, stage="crop", subject="S001", config={"v": 1}) as writer:
        writer.write_array("x", np.arange(3))
    with (
        pytest.raises(RuntimeError, match="boom"),
        write_store(final, stage="crop", subject="S001", config={"v": 2}) as writer,
    ):
        writer.write_array("x", np.arange(5))
        raise RuntimeError("boom")
    assert store_attrs(final)["config"] == {"v": 1}
    np.testing.assert_array_equal(open_store(final)["x"][...], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]

    with write_store(final, stage="crop", subject="S001", config={"v": 3}) as writer:
        writer.write_array("y", np.arange(4))
    assert store_attrs(final)["config"] == {"v": 3}
    assert "x" not in open_store(final) and verify_store(final) == []
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_same_data_gives_identical_bytes(tmp_path: Path) -> None:
    images = image_stack(2, 3, 24, 20)
    write_example(tmp_path / "a.zarr", images)
    write_example(tmp_path / "b.zarr", images)
    a_files = files_under(tmp_path / "a.zarr")
    b_files = files_under(tmp_path / "b.zarr")
    assert [p.relative_to(tmp_path / "a.zarr") for p in a_files] == [
        p.relative_to(tmp_path / "b.zarr") for p in b_files
    ]
    for a, b in zip(a_files, b_files, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    encoded = {AvifCodec(quality=80).encode_pixels(images[0, 0]) for _ in range(3)}
    assert len(encoded) == 1


# -- manifest ----------------------------------------------------------------------------------------------
@pytest.fixture
def example_store(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    write_example(path, image_stack(3, 4))
    (path / ".snakemake_timestamp").touch()  # what Snakemake adds to directory() outputs
    return path


def test_manifest_lists_every_array(example_store: Path) -> None:
    arrays = read_manifest(example_store)["arrays"]
    assert sorted(arrays) == ["K", "camera_ids", "rgb", "rgb_avif", "valid"]
    rgb = arrays["rgb"]
    assert rgb["shape"] == [3, 4, 40, 32, 3] and rgb["dtype"] == "uint8"
    assert rgb["chunks"] == [1, 1, 40, 32, 3] and rgb["shards"] == [1, 4, 40, 32, 3]
    assert rgb["codecs"] == ["sharding_indexed[bytes,zstd]"]
    assert arrays["rgb_avif"]["codecs"] == [f"sharding_indexed[{AVIF_CODEC_NAME}]"]
    assert arrays["K"]["shards"] is None and arrays["camera_ids"]["dtype"] == "<U6"
    # Image arrays are checked by their stored bytes, small arrays by their decoded content.
    assert rgb["checksum"] == "stored" and len(rgb["sha256"]) == 64
    assert arrays["K"]["checksum"] == "decoded" and arrays["valid"]["checksum"] == "decoded"
    assert verify_store(example_store) == []


def test_decoded_checksum_does_not_depend_on_codec_or_chunking(tmp_path: Path) -> None:
    images = image_stack(2, 3, 8, 8)
    with write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config={}) as writer:
        writer.create_images("sharded", images.shape)[...] = images
        writer.write_array("one_chunk", images)
    group = open_store(tmp_path / "s.zarr")
    arrays = read_manifest(tmp_path / "s.zarr")["arrays"]
    sharded = array_checksum(group["sharded"], name="sharded", path=tmp_path / "s.zarr")
    assert arrays["one_chunk"]["checksum"] == "decoded" and arrays["one_chunk"]["sha256"] == sharded
    assert arrays["sharded"]["checksum"] == "stored" and arrays["sharded"]["sha256"] != sharded


def test_verify_catches_a_swapped_lossless_shard(example_store: Path) -> None:
    # A valid zstd shard of another camera: every frame checksum passes, the stored checksum does not.
    shutil.copyfile(example_store / "rgb" / "c.0.0.0.0.0", example_store / "rgb" / "c.2.0.0.0.0")
    assert verify_store(example_store) == ["rgb"]


def test_verify_catches_a_flipped_byte_in_a_shard(example_store: Path) -> None:
    shard = example_store / "rgb" / "c.1.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"array 'rgb'.*unreadable chunk at \[1, [0-3], 0, 0, 0\]") as caught:
        verify_store(example_store)
    assert str(example_store) in str(caught.value)


def test_verify_catches_silently_wrong_content(example_store: Path) -> None:
    # A valid shard of another camera: decodes fine, but the pixels are not the ones the manifest promised.
    shutil.copyfile(example_store / "rgb_avif" / "c.0.0.0.0.0", example_store / "rgb_avif" / "c.2.0.0.0.0")
    (example_store / "K" / "c.0.0.0").unlink()  # a lost chunk file reads back as zeros
    assert verify_store(example_store) == ["K", "rgb_avif"]


def test_verify_names_missing_and_reshaped_arrays(example_store: Path) -> None:
    shutil.rmtree(example_store / "valid")
    group = zarr.open_group(example_store, mode="r+")
    del group["K"]
    group.create_array("K", shape=(3, 4, 4), dtype="float32", fill_value=0)
    assert verify_store(example_store) == ["K", "valid"]


def test_verify_names_unexpected_arrays(example_store: Path) -> None:
    zarr.open_group(example_store, mode="r+").create_array("stray", shape=(2,), dtype="uint8", fill_value=0)
    assert verify_store(example_store) == ["stray"]


# -- opening -----------------------------------------------------------------------------------------------
def test_open_store_names_the_path_when_not_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "missing.zarr"
    with pytest.raises(StoreError, match="does not exist") as caught:
        open_store(missing)
    assert str(missing) in str(caught.value) and isinstance(caught.value, Avat3rError)

    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    (empty / ".snakemake_timestamp").touch()
    with pytest.raises(StoreError, match=r"no zarr\.json") as caught:
        open_store(empty)
    assert str(empty) in str(caught.value)

    a_file = tmp_path / "file.zarr"
    a_file.write_text("{}")
    with pytest.raises(StoreError, match="not a folder"):
        open_store(a_file)

    unfinished = tmp_path / "unfinished.zarr"
    zarr.open_group(unfinished, mode="w", zarr_format=3)  # a group, but not written by write_store
    with pytest.raises(StoreError, match="incomplete") as caught:
        open_store(unfinished)
    assert str(unfinished) in str(caught.value)
    with pytest.raises(StoreError, match="incomplete"):
        verify_store(unfinished)


def test_open_store_is_read_only(example_store: Path) -> None:
    group = open_store(example_store)
    with pytest.raises(Exception):  # noqa: B017 - zarr raises its own read-only error type
        group["valid"][0, 0] = False


# -- whole-shard fast path and checksums taken while writing -----------------------------------------------
def _write_mixed(path: Path, through_zarr: bool) -> dict[str, np.ndarray]:
    """Arrays covering the fast path's cases: edge shards (10 timesteps in blocks of 4), empty chunks, a
    two-axis morton order (shard_axes=0), -0.0, float16 and AVIF; written camera by camera and block by block
    through `ImageArray` (fast path) or through zarr itself."""
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (2, 10, 12, 9, 3), dtype=np.uint8)
    u8[0, 3] = 0
    u8[1, 4:8] = 0  # a whole empty shard: no file, as zarr does
    f32 = rng.normal(size=(3, 5, 3, 6, 6)).astype(np.float32)
    f32[0, 0] = 0
    f32[1, 1] = -0.0  # not the fill value bit for bit: stored
    data = {"u8": u8, "f32": f32, "avif": u8, "f16": f32.astype(np.float16)}
    options = {"u8": {"images_per_shard": 4}, "f32": {"shard_axes": 0}, "avif": {"codec": "avif"}, "f16": {}}
    options["avif"]["images_per_shard"] = 4
    with write_store(path, stage="crop", subject="S001", config={}) as writer:
        for name, values in data.items():
            array = writer.create_images(name, values.shape, dtype=values.dtype, **options[name])
            target = array.zarr_array if through_zarr else array
            if name == "f32":
                target[...] = values
                continue
            for c in range(values.shape[0]):
                for t in range(0, values.shape[1], 4):
                    target[c, t : t + 4] = values[c, t : t + 4]
    return data


def test_whole_shard_writes_are_byte_identical_to_zarr(tmp_path: Path) -> None:
    data = _write_mixed(tmp_path / "fast.zarr", through_zarr=False)
    _write_mixed(tmp_path / "zarr.zarr", through_zarr=True)
    fast, slow = files_under(tmp_path / "fast.zarr"), files_under(tmp_path / "zarr.zarr")
    assert [p.relative_to(tmp_path / "fast.zarr") for p in fast] == [
        p.relative_to(tmp_path / "zarr.zarr") for p in slow
    ]
    for a, b in zip(fast, slow, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name  # manifest included: same checksums either way
    assert not (tmp_path / "fast.zarr" / "u8" / "c.1.1.0.0.0").exists()
    group = open_store(tmp_path / "fast.zarr")
    for name in ("u8", "f32", "f16"):
        assert group[name][...].tobytes() == data[name].tobytes()  # bit for bit, -0.0 included


def test_read_block_matches_zarr_and_names_a_damaged_shard(tmp_path: Path) -> None:
    data = _write_mixed(tmp_path / "s.zarr", through_zarr=False)
    group = open_store(tmp_path / "s.zarr")
    for key in [(1, slice(8, 10)), (0, slice(0, 4)), (1, slice(4, 8)), (0, 3), (1, slice(1, 3)), ...]:
        np.testing.assert_array_equal(read_block(group["u8"], key), group["u8"][key])
    np.testing.assert_array_equal(read_block(group["u8"], (0, slice(0, 4))), data["u8"][0, :4])
    assert read_block(group["f32"]).tobytes() == data["f32"].tobytes()
    np.testing.assert_array_equal(read_block(group["avif"], (1, slice(0, 4))), group["avif"][1, :4])
    shard = tmp_path / "s.zarr" / "u8" / "c.0.0.0.0.0"
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 3] ^= 0x10
    shard.write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match=r"array 'u8'.*unreadable chunk at \[0, [0-3], 0, 0, 0\]") as caught:
        read_block(group["u8"], (0, slice(0, 4)))
    assert str(tmp_path / "s.zarr") in str(caught.value)


def test_image_arrays_written_any_way_get_stored_checksums(tmp_path: Path) -> None:
    images = image_stack(3, 4, 8, 8)
    with write_store(tmp_path / "s.zarr", stage="crop", subject="S001", config={}) as writer:
        writer.create_images("in_order", images.shape, images_per_shard=2)[1, 2:4] = images[1, 2:4]
        backwards = writer.create_images("backwards", images.shape)
        backwards[2] = images[2]
        backwards[0] = images[0]
        writer.create_images("stepped", images.shape)[::2] = images[::2]  # not a box: zarr writes it
        writer.create_images("scalar", images.shape)[1] = 7
        writer.create_images("partial", images.shape)[0, 1, 2:5] = images[0, 1, 2:5]  # partial shard: zarr
        assert writer.checksums() == {}
    group = open_store(tmp_path / "s.zarr")
    entries = read_manifest(tmp_path / "s.zarr")["arrays"]
    for name, entry in entries.items():
        assert entry["checksum"] == "stored", name
        assert entry["sha256"] == stored_checksum(tmp_path / "s.zarr", name), name
    np.testing.assert_array_equal(group["in_order"][1, 2:4], images[1, 2:4])
    np.testing.assert_array_equal(group["backwards"][0], images[0])
    assert (group["scalar"][1] == 7).all() and not group["scalar"][0].any()
    assert verify_store(tmp_path / "s.zarr") == []


@pytest.mark.parametrize("codec", ["avif", "jpeg"])
def test_lossy_arrays_are_checked_by_their_stored_bytes(tmp_path: Path, codec: str) -> None:
    example_store, name = tmp_path / "s.zarr", f"rgb_{codec}"
    images = image_stack(2, 3)
    with write_store(example_store, stage="crop", subject="S001", config=CONFIG) as writer:
        writer.create_images(name, images.shape, codec=codec, quality=90)[...] = images
    entry = read_manifest(example_store)["arrays"][name]
    assert entry["checksum"] == "stored" and len(entry["sha256"]) == 64
    assert verify_store(example_store) == []
    shard = example_store / name / "c.1.0.0.0.0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # AVIF and JPEG have no checksum: they may still decode, to other pixels
    shard.write_bytes(bytes(data))
    assert verify_store(example_store) == [name]
    assert main(["validate", str(example_store)]) == 1


def test_format_1_manifests_still_verify(example_store: Path) -> None:
    """Stores written before checksums were taken while writing: decoded checksums of every array."""
    group = open_store(example_store)
    manifest = read_manifest(example_store)
    manifest["format"] = "avat3r-store-manifest/1"
    for name, entry in manifest["arrays"].items():
        del entry["checksum"]
        entry["sha256"] = array_checksum(group[name], name=name, path=example_store)
    (example_store / "manifest.json").write_text(json.dumps(manifest))
    assert verify_store(example_store) == []
    shutil.copyfile(example_store / "rgb_avif" / "c.0.0.0.0.0", example_store / "rgb_avif" / "c.2.0.0.0.0")
    assert verify_store(example_store) == ["rgb_avif"]

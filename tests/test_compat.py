"""Model/data compatibility: the Sapiens weights fingerprint, index signatures, and the checks that keep a
model from training on or being scored against data made with another extractor or other expression codes.

Everything is built by hand (small index dicts, tiny random networks), so the file runs in seconds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from avat3r_core.config import validate_sections
from avat3r_core.models.sapiens import load_sapiens, weights_fingerprint, write_random_sapiens
from avat3r_core.recon.compat import (
    DataMismatchError,
    DataSignature,
    check_model_fits_data,
    index_signature,
    training_signature,
)
from avat3r_core.recon.model import ModelConfig
from avat3r_core.recon.train import TrainingError, check_data_fits_model
from avat3r_core.stages.shards import assign_splits

TINY_SAPIENS = {"embed_dim": 64, "depth": 2, "num_heads": 4, "img_size": 64}
FP_A = "0123456789abcdef@64x64"
FP_B = "fedcba9876543210@64x64"


# ------------------------------------------------------------------------------------- weights fingerprint


def _tensors(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(8, 4, generator=generator),
        torch.randn(8, generator=generator),
        torch.randn(3, 5, 7, generator=generator),
    )


def _holder(named: Mapping[str, torch.Tensor]) -> nn.Module:
    """A module holding exactly these tensors as parameters, in this order, under these names."""
    return nn.ParameterDict({name: nn.Parameter(tensor.clone()) for name, tensor in named.items()})


def test_fingerprint_ignores_key_names_and_order() -> None:
    weight, bias, table = _tensors(0)
    timm_like = _holder({"qkv_weight": weight, "qkv_bias": bias, "pos_embed": table})
    other_like = _holder({"layers_0_table": table, "b": bias, "w": weight})
    assert weights_fingerprint(timm_like) == weights_fingerprint(other_like)
    assert len(weights_fingerprint(timm_like)) == 16


def test_fingerprint_equals_across_bf16() -> None:
    """The fp32 state dict and a bf16 export of the same weights name one extractor."""
    module = _holder(dict(zip("abc", _tensors(1), strict=True)))
    reference = weights_fingerprint(module)
    in_bf16 = copy.deepcopy(module).to(torch.bfloat16)
    assert weights_fingerprint(in_bf16) == reference
    assert weights_fingerprint(copy.deepcopy(in_bf16).float()) == reference


def test_fingerprint_sees_other_weights_and_shapes() -> None:
    weight, bias, table = _tensors(2)
    reference = weights_fingerprint(_holder({"w": weight, "b": bias, "t": table}))
    nudged = bias.clone()
    nudged[3] += 0.5  # every value of a tensor of <= 256 elements is sampled
    assert weights_fingerprint(_holder({"w": weight, "b": nudged, "t": table})) != reference
    assert weights_fingerprint(_holder({"w": weight.reshape(4, 8), "b": bias, "t": table})) != reference
    assert weights_fingerprint(_holder({"w": weight, "b": bias})) != reference  # a tensor fewer
    assert weights_fingerprint(_holder(dict(zip("wbt", _tensors(3), strict=True)))) != reference


def test_fingerprint_skips_integer_buffers() -> None:
    """Counters (BatchNorm's num_batches_tracked) say nothing about what the weights compute."""
    module = _holder(dict(zip("abc", _tensors(4), strict=True)))
    reference = weights_fingerprint(module)
    module.register_buffer("steps", torch.tensor(12345, dtype=torch.long))
    assert weights_fingerprint(module) == reference


@pytest.fixture(scope="module")
def tiny_sapiens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sapiens")
    return {
        name: write_random_sapiens(root / f"{name}.pth", TINY_SAPIENS, seed=seed)
        for name, seed in (("seed1", 1), ("seed1_again", 1), ("seed2", 2))
    }


def test_sapiens_fingerprint_per_seed_and_input_size(tiny_sapiens: dict[str, Path]) -> None:
    first = load_sapiens(tiny_sapiens["seed1"], TINY_SAPIENS, input_size=64).fingerprint()
    again = load_sapiens(tiny_sapiens["seed1_again"], TINY_SAPIENS, input_size=64).fingerprint()
    other = load_sapiens(tiny_sapiens["seed2"], TINY_SAPIENS, input_size=64).fingerprint()
    smaller = load_sapiens(tiny_sapiens["seed1"], TINY_SAPIENS, input_size=32).fingerprint()
    assert first == again and first.endswith("@64x64")
    assert other != first
    assert smaller != first and smaller.endswith("@32x32")
    wide = load_sapiens(tiny_sapiens["seed1"], TINY_SAPIENS, input_size=(64, 48)).fingerprint()
    assert wide.endswith("@64x48")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*torch.jit.*deprecated:FutureWarning")
def test_sapiens_fingerprint_equals_for_torchscript_of_same_weights(
    tiny_sapiens: dict[str, Path], tmp_path: Path
) -> None:
    """The same weights loaded from a state dict or from a TorchScript file are one extractor."""
    extractor = load_sapiens(tiny_sapiens["seed1"], TINY_SAPIENS, input_size=64)
    traced = torch.jit.trace(extractor.network, torch.zeros(1, 3, 64, 64), check_trace=False)
    path = tmp_path / "sapiens_tiny_torchscript.pt2"
    traced.save(str(path))
    assert load_sapiens(path, input_size=64).fingerprint() == extractor.fingerprint()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_sapiens_fingerprint_equals_for_bf16_export_of_same_weights(
    tiny_sapiens: dict[str, Path], tmp_path: Path
) -> None:
    """Upstream's lite file is a bf16 ExportedProgram of the fp32 weights: the same extractor."""
    extractor = load_sapiens(tiny_sapiens["seed1"], TINY_SAPIENS, input_size=64)
    network = copy.deepcopy(extractor.network).to(torch.bfloat16)
    program = torch.export.export(network, (torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16),))
    path = tmp_path / "sapiens_tiny_bfloat16.pt2"
    torch.export.save(program, str(path))
    lite = load_sapiens(path, input_size=64)
    assert "bfloat16" in lite.description
    assert lite.fingerprint() == extractor.fingerprint()


# ------------------------------------------------------------------------------------------ index signature


def _subject(
    split: str, fingerprint: str | None = FP_A, source: str | None = "ava256", dim: int | None = 256
) -> dict[str, Any]:
    """One subject entry as `stages.shards.write_dataset_index` writes it (minus the store paths)."""
    return {
        "split": split,
        "features": {"model": "Sapiens tiny (64x64 input, cpu fp32)", "fingerprint": fingerprint},
        "expression": {"source": source, "dim": dim},
    }


def _index(
    subjects: dict[str, dict[str, Any]], dataset: str = "ava256", evaluation_only: bool = False
) -> dict:
    return {"dataset": dataset, "evaluation_only": evaluation_only, "subjects": subjects}


def test_index_signature_of_agreeing_subjects() -> None:
    index = _index({"A1": _subject("train"), "B2": _subject("train"), "C3": _subject("test", FP_B)})
    signature = index_signature(index, "train")
    assert signature == DataSignature("ava256", "Sapiens tiny (64x64 input, cpu fp32)", FP_A, "ava256", 256)
    assert signature.expression_kind == "Ava-256 latent"
    assert index_signature(index, "test").features_fingerprint == FP_B
    assert DataSignature.from_dict(signature.as_dict()) == signature  # what a model stores and reads back


def test_index_signature_ignores_the_features_description() -> None:
    """The description names the device and precision; only the fingerprint names the weights."""
    other = _subject("train")
    other["features"]["model"] = "Sapiens tiny (64x64 input, cuda bf16 autocast)"
    assert (
        index_signature(_index({"A1": _subject("train"), "B2": other}), "train").features_fingerprint == FP_A
    )


@pytest.mark.parametrize(
    ("other", "shown"),
    [
        (_subject("train", fingerprint=FP_B), FP_B),
        (_subject("train", source="flame_gagavatar", dim=256), "flame_gagavatar"),
        (_subject("train", dim=128), "128-d"),
    ],
)
def test_index_signature_names_disagreeing_subjects(other: dict[str, Any], shown: str) -> None:
    index = _index({"A1": _subject("train"), "B2": other, "C3": _subject("train")})
    with pytest.raises(
        DataMismatchError, match=r"subjects A1 and B2 were preprocessed differently"
    ) as caught:
        index_signature(index, "train")
    assert shown in str(caught.value)


def test_index_signature_empty_split_is_an_error() -> None:
    index = _index({"A1": _subject("train"), "B2": _subject("test")})
    with pytest.raises(DataMismatchError, match=r"no subjects in split 'validation'"):
        index_signature(index, "validation")


def test_index_signature_by_subject_names() -> None:
    index = _index({"A1": _subject("train"), "B2": _subject("test", FP_B), "C3": _subject("test", FP_B)})
    assert index_signature(index, subjects={"B2", "C3"}).features_fingerprint == FP_B
    assert index_signature(index, subjects=["A1"]).features_fingerprint == FP_A
    with pytest.raises(DataMismatchError, match=r"subjects A1 and B2"):
        index_signature(index, subjects=["A1", "B2"])  # any split, only the named ones
    with pytest.raises(DataMismatchError, match=r"no subjects"):
        index_signature(index, "train", subjects=["B2"])  # split and names together


def test_index_signature_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_text(
        json.dumps(_index({"A1": _subject("train", source="flame_nersemble", dim=100)}, "nersemble"))
    )
    signature = index_signature(path)
    assert (signature.dataset, signature.expression_kind, signature.expression_dim) == (
        "nersemble",
        "FLAME",
        100,
    )


# ------------------------------------------------------------------------------------ model against the data


def _signature(
    fingerprint: str | None = FP_A,
    source: str | None = "ava256",
    dim: int | None = 256,
    dataset: str = "ava256",
) -> DataSignature:
    return DataSignature(dataset, "Sapiens tiny", fingerprint, source, dim)


def test_model_fits_its_own_data() -> None:
    assert check_model_fits_data(_signature().as_dict(), _signature()) == []


def test_other_extractor_is_refused() -> None:
    with pytest.raises(DataMismatchError, match=r"features\.checkpoint") as caught:
        check_model_fits_data(_signature().as_dict(), _signature(FP_B))
    assert FP_A in str(caught.value) and FP_B in str(caught.value)  # names both sides


def test_other_expression_dim_is_refused() -> None:
    trained = _signature(source="flame_gagavatar", dim=256).as_dict()
    with pytest.raises(DataMismatchError, match=r"256-d expression codes, the data has 100-d"):
        check_model_fits_data(trained, _signature(source="flame_gagavatar", dim=100))


@pytest.mark.parametrize(("trained", "data"), [("ava256", "flame_gagavatar"), ("flame_nersemble", "ava256")])
def test_other_expression_kind_is_refused(trained: str, data: str) -> None:
    with pytest.raises(DataMismatchError, match=r"capture\.expression_source"):
        check_model_fits_data(_signature(source=trained).as_dict(), _signature(source=data))


def test_other_flame_tracker_is_a_note() -> None:
    trained = _signature(source="flame_gagavatar", dim=100).as_dict()
    notes = check_model_fits_data(trained, _signature(source="flame_nersemble", dim=100, dataset="nersemble"))
    assert len(notes) == 1 and "flame_nersemble" in notes[0] and "flame_gagavatar" in notes[0]


def test_unrecorded_sides_are_notes() -> None:
    assert "no training-data signature" in check_model_fits_data(None, _signature())[0]
    assert "no training-data signature" in check_model_fits_data({}, _signature())[0]
    for trained, data in ((_signature(None), _signature()), (_signature(), _signature(None))):
        notes = check_model_fits_data(trained.as_dict(), data)
        assert notes == ["features fingerprint unrecorded on one side: not compared"]
    for trained, data in ((_signature(source=None), _signature()), (_signature(), _signature(source=None))):
        assert len(check_model_fits_data(trained.as_dict(), data)) == 1  # codes unrecorded on one side
    # an old model config's "data" with keys missing still reads (absent = unrecorded)
    notes = check_model_fits_data({"dataset": "ava256", "expression_source": "ava256"}, _signature())
    assert notes == ["features fingerprint unrecorded on one side: not compared"]


def test_unrecorded_fingerprint_does_not_hide_other_code_kind() -> None:
    with pytest.raises(DataMismatchError, match=r"Ava-256 latent codes, the data has FLAME"):
        check_model_fits_data(_signature(None).as_dict(), _signature(source="flame_gagavatar"))


# -------------------------------------------------------------------------------------- training signature


def _write(path: Path, index: dict[str, Any]) -> Path:
    path.write_text(json.dumps(index))
    return path


def test_training_signature_is_the_train_split(tmp_path: Path) -> None:
    index = _write(
        tmp_path / "index.json",
        _index({"A1": _subject("train"), "B2": _subject("validation"), "C3": _subject("test", FP_B)}),
    )
    assert training_signature(index) == index_signature(index, "train")
    mate = _write(tmp_path / "mate.json", _index({"X1": _subject("train"), "X2": _subject("test")}, "other"))
    signature = training_signature(index, [{"index": str(mate), "split": "test"}])
    assert signature.features_fingerprint == FP_A and signature.dataset == "ava256"  # the run's own index


def test_training_refuses_an_evaluation_only_index(tmp_path: Path) -> None:
    evaluation = _write(
        tmp_path / "nersemble.json",
        _index({"N1": _subject("train"), "N2": _subject("test")}, "nersemble", evaluation_only=True),
    )
    with pytest.raises(DataMismatchError, match=r"evaluation-only capture \(nersemble"):
        training_signature(evaluation)
    index = _write(tmp_path / "index.json", _index({"A1": _subject("train")}))
    with pytest.raises(DataMismatchError, match=r"nersemble\.json indexes an evaluation-only capture"):
        training_signature(index, [{"index": str(evaluation), "split": "test"}])


def test_training_refuses_a_mix_member_of_other_data(tmp_path: Path) -> None:
    index = _write(tmp_path / "index.json", _index({"A1": _subject("train")}))
    other = _write(tmp_path / "other.json", _index({"B1": _subject("train", FP_B)}, "other"))
    with pytest.raises(DataMismatchError, match=r"train\.mix member .*other\.json \(split train\)"):
        training_signature(index, [{"index": str(other)}])
    codes = _write(tmp_path / "codes.json", _index({"B1": _subject("test", source="flame_gagavatar")}))
    with pytest.raises(DataMismatchError, match=r"split test"):
        training_signature(index, [{"index": str(codes), "split": "test"}])


# ------------------------------------------------------------------------------------------- shard splits


def test_evaluation_only_splits_have_no_train() -> None:
    cfg = validate_sections({"shards": {"test_count": 1, "validation_count": 1}})["shards"]
    subjects = ["C3", "A1", "B2", "D4"]
    assert set(assign_splits(subjects, cfg, evaluation_only=True).values()) == {"test"}
    listed = dict(cfg, validation_subjects=["B2"], test_count=0)
    assert assign_splits(subjects, listed, evaluation_only=True) == {
        "A1": "test",
        "B2": "validation",
        "C3": "test",
        "D4": "test",
    }
    assert "train" in assign_splits(subjects, listed).values()  # the same cfg trains when not evaluation-only


# ------------------------------------------------------------------------------------------ training checks


def test_training_refuses_codes_of_another_dimension() -> None:
    cfg = ModelConfig.tiny(expression_dim=256)
    empty = SimpleNamespace(subjects=[])
    with pytest.raises(
        TrainingError, match=r"flame_gagavatar expression codes are 100-d, the model takes 256"
    ):
        check_data_fits_model(empty, cfg, _signature(source="flame_gagavatar", dim=100))
    check_data_fits_model(empty, cfg, _signature(dim=256))  # the same dimension passes
    check_data_fits_model(empty, cfg, _signature(dim=None))  # unrecorded: not compared
    check_data_fits_model(empty, cfg)

"""Whether a trained model fits a dataset: the same feature extractor, the same kind of expression code.

A model reads Sapiens features and expression codes as they were when it trained. Shards whose features
came from other weights, or whose codes are of another kind (Ava-256 latents against FLAME parameters),
give it inputs it never saw: it still renders, and the numbers mean nothing. Training records the
signature of its data in the model (`config["data"]`); evaluation compares it with the signature of the
subjects it scores and stops with an error naming both, so a model trained on one capture can be evaluated
on another (the paper's NeRSemble protocol) only when that comparison is meaningful.

The signatures come from the dataset index (`stages.shards.write_dataset_index`): per subject the
features' model description and weights fingerprint (`models.sapiens.weights_fingerprint`) and the
expression source and dimension.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from avat3r_core.errors import Avat3rError

EXPRESSION_KINDS = {"ava256": "Ava-256 latent", "flame_gagavatar": "FLAME", "flame_nersemble": "FLAME"}
"""Codes of one kind share a meaning (FLAME from either tracker); codes of different kinds do not."""


class DataMismatchError(Avat3rError):
    """A model and a dataset (or the subjects of one run) disagree on features or expression codes."""


@dataclass(frozen=True)
class DataSignature:
    """What the model's inputs were made with. None = not recorded (stores from before this check)."""

    dataset: str
    features_model: str | None
    features_fingerprint: str | None
    expression_source: str | None
    expression_dim: int | None

    @property
    def expression_kind(self) -> str | None:
        if self.expression_source is None:
            return None
        return EXPRESSION_KINDS.get(self.expression_source, self.expression_source)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSignature:
        return cls(**{key: data.get(key) for key in cls.__dataclass_fields__})

    def describe(self) -> str:
        return (
            f"{self.dataset}: features {self.features_model or 'unrecorded'} "
            f"[{self.features_fingerprint or '?'}], {self.expression_kind or 'unrecorded'} codes "
            f"({self.expression_source or '?'}, {self.expression_dim if self.expression_dim else '?'}-d)"
        )


def _subject_signature(dataset: str, entry: Mapping[str, Any]) -> DataSignature:
    features = entry.get("features") or {}
    expression = entry.get("expression") or {}
    dim = expression.get("dim")
    return DataSignature(
        dataset=dataset,
        features_model=features.get("model"),
        features_fingerprint=features.get("fingerprint"),
        expression_source=expression.get("source"),
        expression_dim=int(dim) if dim is not None else None,
    )


def load_index(index: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    return dict(index) if isinstance(index, Mapping) else json.loads(Path(index).read_text())


def index_signature(
    index: str | Path | Mapping[str, Any], split: str | None = None, subjects: Iterable[str] | None = None
) -> DataSignature:
    """The one signature of an index's subjects (those of `split`, or the named ones; all if neither).

    Subjects whose features or codes differ cannot be one training set or one evaluation:
    DataMismatchError names the first two that disagree.
    """
    data = load_index(index)
    dataset = str(data.get("dataset", "unknown"))
    chosen = set(subjects) if subjects is not None else None
    signatures: dict[str, DataSignature] = {}
    for name, entry in sorted(data["subjects"].items()):
        if (split is None or entry.get("split") == split) and (chosen is None or name in chosen):
            signatures[name] = _subject_signature(dataset, entry)
    if not signatures:
        wanted = f"split {split!r}" if split is not None else "every split"
        named = f" among {sorted(chosen)}" if chosen is not None else ""
        raise DataMismatchError(f"the dataset index has no subjects in {wanted}{named}")
    (first, reference), *rest = signatures.items()
    for name, signature in rest:
        if _key(signature) != _key(reference):
            raise DataMismatchError(
                f"subjects {first} and {name} were preprocessed differently and cannot be used together: "
                f"{reference.describe()} vs {signature.describe()}"
            )
    return reference


def _key(signature: DataSignature) -> tuple[Any, ...]:
    return (signature.features_fingerprint, signature.expression_source, signature.expression_dim)


def check_model_fits_data(trained: Mapping[str, Any] | None, data: DataSignature) -> list[str]:
    """Raise DataMismatchError where a model trained on `trained` (its `config["data"]`) cannot be scored
    on `data`; return notes for what differs but still compares (another FLAME tracker, unrecorded sides).
    """
    if not trained:
        return ["the model records no training-data signature (trained before this check): not compared"]
    model = DataSignature.from_dict(trained)
    notes: list[str] = []
    where = f"model trained on {model.describe()}; evaluated on {data.describe()}"
    if model.features_fingerprint and data.features_fingerprint:
        if model.features_fingerprint != data.features_fingerprint:
            raise DataMismatchError(
                "the features were made by another extractor than the model trained on (rebuild the "
                f"features with the model's features.checkpoint and features.input_size): {where}"
            )
    else:
        notes.append("features fingerprint unrecorded on one side: not compared")
    if model.expression_dim and data.expression_dim and model.expression_dim != data.expression_dim:
        raise DataMismatchError(
            f"the model takes {model.expression_dim}-d expression codes, the data has "
            f"{data.expression_dim}-d ones (capture.expression_source / capture.flame_dims): {where}"
        )
    if model.expression_kind and data.expression_kind and model.expression_kind != data.expression_kind:
        raise DataMismatchError(
            f"the model was driven by {model.expression_kind} codes, the data has {data.expression_kind} "
            f"codes (capture.expression_source): {where}"
        )
    if model.expression_source is None or data.expression_source is None:
        notes.append("expression source unrecorded on one side: not compared")
    elif model.expression_source != data.expression_source:
        notes.append(
            f"expression codes from {data.expression_source}, the model trained with "
            f"{model.expression_source} (same kind, another tracker)"
        )
    return notes


def training_signature(index: str | Path, mix: Iterable[Mapping[str, Any]] = ()) -> DataSignature:
    """The signature a training run records: its index's train split, which every `train.mix` member
    (index and split) must share. An evaluation-only index (NeRSemble by default) is refused, in any split.
    """
    members = [(Path(index), "train"), *((Path(m["index"]), m.get("split", "train")) for m in mix)]
    signature: DataSignature | None = None
    for path, split in members:
        data = load_index(path)
        if data.get("evaluation_only"):
            raise DataMismatchError(
                f"{path} indexes an evaluation-only capture ({data.get('dataset', 'unknown')}, "
                "capture.evaluation_only): it is never trained on, in any split"
            )
        own = index_signature(data, split)
        if signature is None:
            signature = own
        elif _key(own) != _key(signature):
            raise DataMismatchError(
                f"train.mix member {path} (split {split}) was preprocessed differently from the run's "
                f"training data: {signature.describe()} vs {own.describe()}"
            )
    assert signature is not None
    return signature

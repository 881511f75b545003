"""Loading and validating the workflow configuration.

The Snakefile and the command line validate the same `workflow/schemas/config.schema.yaml`, so a bad value
fails the same way whether a user runs the DAG or one stage by hand, with one line naming the key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from avat3r_core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(validator_class: type[jsonschema.protocols.Validator]) -> type:
    """A validator that fills `default:` values while validating (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema() -> dict[str, Any]:
    with SCHEMA_PATH.open() as handle:
        return yaml.safe_load(handle)


def _raise_first_error(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    """Validate (filling defaults in place) and raise the most relevant error as a ConfigError."""
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(instance))
    if error is None:
        return
    key = ".".join(str(part) for part in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        raise ConfigError(key, f"unknown key ({error.message})")
    if error.validator == "type":
        raise ConfigError(key, f"expected {error.validator_value}, got {error.instance!r}")
    raise ConfigError(key, error.message)


def _set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated copy of `config` with defaults filled in; raise ConfigError naming the key."""
    checked = copy.deepcopy(dict(config))
    _raise_first_error(load_schema(), checked)
    return checked


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply dotted-key overrides ({'synthetic.n_cameras': 8}) and validate it."""
    path = Path(path)
    try:
        with path.open() as handle:
            config = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise ConfigError("<file>", f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"{path} is not valid YAML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(config, dotted, value)
    return validate_config(config)


def section_json(section: Mapping[str, Any]) -> str:
    """Canonical JSON of a config section: rules pass it as a param, so only a real change reruns a job."""
    return json.dumps(section, sort_keys=True, separators=(",", ":"))


def validate_sections(
    sections: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Validate only the top-level sections given (what a rule passes to one stage), defaults filled."""
    schema = load_schema()
    checked = copy.deepcopy(dict(sections))
    for dotted, value in (overrides or {}).items():
        _set_dotted(checked, dotted, value)
    for name in checked:
        if name not in schema["properties"]:
            raise ConfigError(name, "unknown key")
        sub_schema = {"type": "object", "properties": {name: schema["properties"][name]}}
        _raise_first_error(sub_schema, checked)
    return checked


def variant_sections(config: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The ``seed``, ``model`` and ``train`` sections of one training variant, its overrides applied."""
    variants = config.get("variants") or {"base": {}}
    if variant not in variants:
        raise ConfigError("variants", f"no variant named {variant!r} (have {sorted(variants)})")
    sections = {
        "seed": config.get("seed", 0),
        "model": config.get("model", {}),
        "train": config.get("train", {}),
    }
    return validate_sections(sections, variants[variant])


def is_evaluation_only(capture: Mapping[str, Any]) -> bool:
    """`capture.evaluation_only`; null means the dataset's default (NeRSemble: evaluation only, as in the
    paper, which never trains on it; Ava-256: not)."""
    value = capture.get("evaluation_only")
    return capture.get("dataset") == "nersemble" if value is None else bool(value)


def dataset_name(config: Mapping[str, Any]) -> str:
    """The run's dataset name (protocol, dataset index, what a model records it trained on):
    evaluate.protocol.dataset, else `synthetic` (`synthetic_nersemble` for that layout) or capture.dataset."""
    named = (config.get("evaluate", {}).get("protocol") or {}).get("dataset")
    if named:
        return str(named)
    synthetic = config.get("synthetic", {})
    if synthetic.get("enabled"):
        layout = synthetic.get("layout", "ava256")
        return "synthetic" if layout == "ava256" else f"synthetic_{layout}"
    return str(config.get("capture", {}).get("dataset", "unknown"))


def trained_variants(config: Mapping[str, Any]) -> list[str]:
    """The variants this run trains: none on an evaluation-only capture (its subjects are all held out)."""
    if is_evaluation_only(config["capture"]):
        return []
    return list(config.get("variants") or {"base": {}})


def evaluated_models(config: Mapping[str, Any]) -> dict[str, str | None]:
    """Name -> model file of everything this run scores: its trained variants (None: the train rule's
    model.pt) and `evaluate.models` trained elsewhere. A name used for both is an error."""
    external = dict(config.get("evaluate", {}).get("models") or {})
    clash = sorted(set(external) & set(config.get("variants") or {}))
    if clash:
        raise ConfigError("evaluate.models", f"{', '.join(clash)} also named in variants: rename one")
    return {**dict.fromkeys(trained_variants(config)), **external}

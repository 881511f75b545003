"""The config schema: defaults, types, unknown keys, and the one-line error a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avat3r_core.cli import main
from avat3r_core.config import REPO_ROOT, load_config, section_json, validate_sections
from avat3r_core.errors import ConfigError

DEFAULT_CONFIG = REPO_ROOT / "config.yaml"


def test_default_config_is_valid_and_fills_defaults() -> None:
    config = load_config(DEFAULT_CONFIG)
    assert config["synthetic"]["enabled"] is True
    assert config["synthetic"]["n_cameras"] == 16
    minimal = validate_sections({"capture": {"dataset": "ava256", "root": "x"}})
    assert minimal["capture"]["subjects"] == [] and minimal["capture"]["max_subjects"] is None


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ({"synthetic.n_cameras": "sixteen"}, "synthetic.n_cameras", "expected integer"),
        ({"capture.max_subjects": 0}, "capture.max_subjects", "less than the minimum"),
        ({"capture.dataset": "mugsy"}, "capture.dataset", "is not one of"),
        ({"synthetic.cameras": 3}, "synthetic", "unknown key"),
        ({"seed": 1.5}, "seed", "expected integer"),
    ],
)
def test_bad_values_name_the_key(override: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DEFAULT_CONFIG, override)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"config key '{key}':")
    assert fragment in str(caught.value)


def test_cli_prints_one_line_for_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["synthetic"]["downsample"] = "16"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["subjects", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["avat3r subjects: error: config key 'synthetic.downsample': expected integer, got '16'"]


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_section_json_is_canonical() -> None:
    assert section_json({"b": 1, "a": {"y": 2, "x": 1}}) == section_json({"a": {"x": 1, "y": 2}, "b": 1})

"""Capture readers behind one interface, chosen by `capture.dataset` in the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avat3r_core.capture.ava256 import Ava256Capture, discover_subjects, select_subjects
from avat3r_core.capture.base import CaptureReader, Frame
from avat3r_core.errors import ConfigError

__all__ = ["CaptureReader", "Frame", "open_capture", "subject_ids"]


def subject_ids(config: dict[str, Any]) -> list[str]:
    """The subjects a run covers, without reading images.

    A synthetic capture's subjects follow from its config alone (the capture may not exist yet when
    Snakemake builds the DAG); a real capture's come from its subject list, one small CSV.
    """
    capture = config["capture"]
    synthetic = config.get("synthetic", {})
    if synthetic.get("enabled") and synthetic.get("layout", "ava256") == "nersemble":
        from avat3r_core.capture.synthetic.nersemble_writer import synthetic_nersemble_subject_ids

        available = synthetic_nersemble_subject_ids(synthetic_config(synthetic))
    elif synthetic.get("enabled"):
        from avat3r_core.capture.synthetic import synthetic_subject_ids

        available = synthetic_subject_ids(synthetic_config(synthetic))
    elif capture["dataset"] == "nersemble":
        from avat3r_core.capture.nersemble import discover_nersemble_subjects

        available = discover_nersemble_subjects(capture["root"])
    else:
        csv_path = Path(capture["subjects_csv"]) if capture.get("subjects_csv") else None
        available = [s.sid for s in discover_subjects(Path(capture["root"]), csv_path)]
    return select_subjects(available, capture.get("subjects", []), capture.get("max_subjects"))


def synthetic_config(section: dict[str, Any]):
    """The generator's config from the `synthetic` config section (keys that are not knobs dropped)."""
    from avat3r_core.capture.synthetic import SyntheticConfig

    knobs = {k: v for k, v in section.items() if k not in {"enabled", "groundtruth", "layout", "tracking"}}
    return SyntheticConfig(**knobs)


def open_capture(capture: dict[str, Any], subject: str) -> CaptureReader:
    """A reader for one subject of the capture described by the `capture` config section."""
    from avat3r_core.capture.expressions import attach_expression_source

    if capture["dataset"] == "ava256":
        reader: CaptureReader = Ava256Capture(
            capture["root"],
            subject,
            subjects_csv=capture.get("subjects_csv"),
            topology=capture.get("topology"),
        )
    elif capture["dataset"] == "nersemble":
        from avat3r_core.capture.nersemble import open_nersemble

        reader = open_nersemble(capture, subject)
    else:
        raise ConfigError("capture.dataset", f"unknown dataset {capture['dataset']!r}")
    # capture.expression_source: the reader's own codes, or FLAME codes from a tracker file.
    return attach_expression_source(reader, capture)

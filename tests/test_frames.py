"""Frame selection: counts, spacing, seeds and the missing-segment and missing-mesh policies."""

from __future__ import annotations

import itertools

import pytest

from avat3r_core.config import validate_sections
from avat3r_core.errors import CaptureError
from avat3r_core.stages.frames import select_frames, spaced

SEGMENTS = {
    "EXP_eye_wide": 25,
    "EXP_tongue001": 12,
    "EXP_jaw003": 30,
    "EXP_neutral_peak": 5,
    "EXP_free_face": 40,
}


def make_index(segments: dict[str, int], subject: str = "AAA001", without_mesh: tuple[int, ...] = ()) -> dict:
    frames, frame = [], 1000
    for name, count in segments.items():
        for _ in range(count):
            frames.append([frame, name])
            frame += 4
        frame += 100
    return {"subject": subject, "frames": frames, "frames_without_mesh": list(without_mesh)}


def frames_config(**overrides) -> dict:
    return validate_sections({"frames": overrides})["frames"]


def test_ten_per_segment_evenly_spaced_with_both_ends() -> None:
    index = make_index(SEGMENTS)
    selection = select_frames(index, frames_config(), seed=0)
    assert len(selection["input"]) == 30
    eye = [f for f, s in index["frames"] if s == "EXP_eye_wide"]
    picked = [f for f, s in selection["input"] if s == "EXP_eye_wide"]
    assert len(picked) == 10 and picked[0] == eye[0] and picked[-1] == eye[-1]
    assert {s for _, s in selection["input"]} == {"EXP_eye_wide", "EXP_tongue001", "EXP_jaw003"}
    gaps = {b - a for a, b in itertools.pairwise(picked)}
    assert max(gaps) - min(gaps) <= 4  # one frame step (4) of rounding at most


def test_total_count_and_short_segments() -> None:
    index = make_index(SEGMENTS)
    assert len(select_frames(index, frames_config(input_count_per="total"), seed=0)["input"]) == 10
    # A segment shorter than the count gives all its frames.
    short = select_frames(
        make_index({"EXP_eye_wide": 3, "EXP_tongue001": 20, "EXP_jaw003": 20}), frames_config(), 0
    )
    assert sum(1 for _, s in short["input"] if s == "EXP_eye_wide") == 3


def test_random_spacing_is_seeded_per_subject() -> None:
    cfg = frames_config(input_spacing="random")
    a = select_frames(make_index(SEGMENTS, "AAA001"), cfg, seed=1)["input"]
    assert a == select_frames(make_index(SEGMENTS, "AAA001"), cfg, seed=1)["input"]
    assert a != select_frames(make_index(SEGMENTS, "AAB002"), cfg, seed=1)["input"]
    assert a != select_frames(make_index(SEGMENTS, "AAA001"), cfg, seed=2)["input"]


def test_missing_segment_policies() -> None:
    partial = {"EXP_eye_wide": 20, "EXP_neutral_peak": 6, "EXP_free_face": 9}
    with pytest.raises(
        CaptureError, match=r"subject AAA001: capture lacks the input segments \['EXP_tongue001'"
    ):
        select_frames(make_index(partial), frames_config(), seed=0)
    skip = select_frames(make_index(partial), frames_config(missing_segment="skip"), seed=0)
    assert skip["input_segments"] == ["EXP_eye_wide"] and "skipped" in skip["policy"]
    fallback = select_frames(make_index(partial), frames_config(missing_segment="fallback"), seed=0)
    assert fallback["input_segments"] == ["EXP_eye_wide", "EXP_neutral_peak"]
    assert sum(1 for _, s in fallback["input"] if s == "EXP_neutral_peak") == 6
    # Identity-only subject (the paper's extra identities): one neutral frame.
    single = select_frames(make_index({"EXP_neutral_peak": 1}), frames_config(missing_segment="any"), seed=0)
    assert [s for _, s in single["input"]] == ["EXP_neutral_peak"]
    assert single["supervision"] == [single["input"][0][0]]


def test_supervision_stride_and_missing_meshes() -> None:
    index = make_index(SEGMENTS, without_mesh=(1000, 1004))
    selection = select_frames(index, frames_config(supervision_stride=5), seed=0)
    usable = [f for f, _ in index["frames"] if f not in (1000, 1004)]
    assert selection["supervision"] == usable[::5]
    assert all(f not in (1000, 1004) for f, _ in selection["input"])
    assert selection["skipped_without_mesh"] == [1000, 1004]
    with pytest.raises(CaptureError, match="subject AAA001, frame 1000: frame has no tracked mesh"):
        select_frames(index, frames_config(missing_mesh="error"), seed=0)


def test_spaced_rejects_unknown_spacing() -> None:
    import numpy as np

    with pytest.raises(ValueError, match="unknown spacing"):
        spaced(list(range(20)), 5, "fibonacci", np.random.default_rng(0))

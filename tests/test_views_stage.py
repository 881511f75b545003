"""The views stage on the synthetic capture: front-facing cameras, partners per timestep, replacements."""

from __future__ import annotations

import copy

import pytest

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.config import validate_sections
from avat3r_core.errors import CaptureError
from avat3r_core.stages.capture_index import build_capture_index
from avat3r_core.stages.frames import select_frames
from avat3r_core.stages.index import CaptureIndex
from avat3r_core.stages.views import select_views

CONFIG = validate_sections({"frames": {}, "views": {}})


@pytest.fixture(scope="module")
def planned(synthetic_capture) -> tuple[dict, dict]:
    index = build_capture_index(Ava256Capture(synthetic_capture.root, synthetic_capture.subjects[0]))
    return index, select_frames(index, CONFIG["frames"], seed=0)


def test_partners_are_front_facing_others_with_images(planned) -> None:
    index_data, frames = planned
    index = CaptureIndex(index_data)
    views = select_views(index, frames, CONFIG["views"], seed=0)
    angles = dict(zip(views["camera_ids"], views["angles_reference_deg"], strict=True))
    assert views["input_cameras"], "some cameras must face the front"
    assert all(angles[c] <= CONFIG["views"]["max_angle_deg"] for c in views["input_cameras"])
    assert any(a > CONFIG["views"]["max_angle_deg"] for a in angles.values()), "the dome has back cameras"
    for camera, info in views["partners"].items():
        assert camera not in info["partners"] and len(info["partners"]) == 3
        assert set(info["partners"]) <= set(views["input_cameras"])
        for frame, used in views["partners_per_timestep"][camera].items():
            assert camera not in used and len(set(used)) == 3
            assert all(index.has_image(p, int(frame)) for p in used)
            assert set(used) <= set(views["front_facing_per_timestep"][frame])
    assert views == select_views(index, frames, CONFIG["views"], seed=0)
    assert views["partners"] != select_views(index, frames, CONFIG["views"], seed=5)["partners"]


def test_missing_partner_image_is_replaced_by_the_next_candidate(planned) -> None:
    index_data, frames = planned
    every_camera = dict(CONFIG["views"], max_angle_deg=180)  # the tiny rig needs every camera for fallbacks
    views = select_views(CaptureIndex(index_data), frames, every_camera, seed=0)
    camera, info = next(iter(views["partners"].items()))
    frame = int(next(iter(views["partners_per_timestep"][camera])))
    dropped = info["partners"][0]
    broken = copy.deepcopy(index_data)
    broken["missing_images"].append([dropped, frame])
    again = select_views(CaptureIndex(broken), frames, every_camera, seed=0)
    used = again["partners_per_timestep"][camera][str(frame)]
    assert dropped not in used
    replacement = next(r for r in again["partner_replacements"] if r[:3] == [camera, frame, dropped])
    assert replacement[3] in info["fallbacks"] and replacement[3] in used


def test_own_missing_image_skips_that_input_view(planned) -> None:
    index_data, frames = planned
    views = select_views(CaptureIndex(index_data), frames, CONFIG["views"], seed=0)
    camera, frame = views["input_views"][0]
    broken = copy.deepcopy(index_data)
    broken["missing_images"].append([camera, frame])
    again = select_views(CaptureIndex(broken), frames, CONFIG["views"], seed=0)
    assert [camera, frame] not in again["input_views"]
    assert [camera, frame, "image missing"] in again["skipped_input_views"]


def test_input_view_without_enough_partners_is_skipped_not_fatal(planned) -> None:
    index_data, frames = planned
    views = select_views(CaptureIndex(index_data), frames, CONFIG["views"], seed=0)
    camera, frame = views["input_views"][0]
    broken = copy.deepcopy(index_data)
    broken["missing_images"] += [[other, frame] for other in views["camera_ids"] if other != camera]
    again = select_views(CaptureIndex(broken), frames, CONFIG["views"], seed=0)
    assert [camera, frame, "fewer than 3 partners with images"] in again["skipped_input_views"]


def test_too_few_front_cameras_is_a_clear_error(planned) -> None:
    index_data, frames = planned
    narrow = dict(CONFIG["views"], max_angle_deg=1.0)
    with pytest.raises(
        CaptureError, match=r"subject AAA001: only \d front-facing cameras \(views.max_angle_deg=1.0\)"
    ):
        select_views(CaptureIndex(index_data), frames, narrow, seed=0)

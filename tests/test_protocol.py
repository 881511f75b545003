"""The evaluation protocol (seeded, versioned, checked against the dataset index) and the studies configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from avat3r_core.config import REPO_ROOT, validate_config, variant_sections
from avat3r_core.recon.data import Avat3rShardDataset
from avat3r_core.recon.protocol import (
    PROTOCOL_VERSION,
    ProtocolDataset,
    ProtocolError,
    build_protocol,
    load_protocol,
    protocol_items,
    write_protocol,
)
from avat3r_core.recon.train import build_model_config

SETTINGS = {"reconstruction_frames": None, "animation_frames": None, "avatars_per_subject": 2}


def _build(index: Path, seed: int = 0, **settings: object) -> dict:
    return build_protocol(index, dataset="tiny", seed=seed, split="train", settings={**SETTINGS, **settings})


def test_same_seed_same_file_and_another_seed_another(shard_index, tmp_path) -> None:
    a = write_protocol(_build(shard_index, seed=3), tmp_path / "a.json")
    b = write_protocol(_build(shard_index, seed=3), tmp_path / "b.json")
    c = write_protocol(_build(shard_index, seed=4), tmp_path / "c.json")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    protocol = json.loads(a.read_text())
    assert protocol["version"] == PROTOCOL_VERSION and protocol["dataset"] == "tiny" and protocol["seed"] == 3
    assert [avatar["id"] for avatar in protocol["avatars"]] == [
        f"{protocol['subjects'][0]}/{i}" for i in (0, 1)
    ]


def test_reconstruction_and_animation_targets_follow_the_inputs_frames(shard_index) -> None:
    protocol = _build(shard_index)
    subject = Avat3rShardDataset(shard_index, n_supervision=1).subjects[0]
    frames = subject.supervision_frames.tolist()
    splits = set()
    for avatar in protocol["avatars"]:
        assert len(avatar["inputs"]) == 4
        assert len({view["camera"] for view in avatar["inputs"]}) == 4  # distinct cameras
        seen = {view["frame"] for view in avatar["inputs"]}
        for view in avatar["inputs"]:  # every input view is valid in the stores
            c = subject.input_cameras.index(view["camera"])
            assert subject.input_valid[c, subject.input_frames.tolist().index(view["frame"])]
        targets = {target["frame"]: target for target in avatar["targets"]}
        # all=None: every supervision frame with a valid camera is a target, classified by the inputs' frames
        assert sorted(targets) == sorted(int(subject.supervision_frames[t]) for t in subject.targets)
        for frame, target in targets.items():
            assert target["split"] == ("reconstruction" if frame in seen else "animation")
            t = frames.index(frame)
            valid = {
                subject.supervision_cameras[c]
                for c in range(len(subject.supervision_cameras))
                if subject.supervision_valid[c, t]
            }
            assert set(target["cameras"]) == valid  # target_cameras None: every valid camera
            splits.add(target["split"])
        assert avatar["video_camera"] in {c for t in avatar["targets"] for c in t["cameras"]}
    assert splits == {"reconstruction", "animation"}


def test_counts_cap_targets_and_keep_the_clip_camera(shard_index) -> None:
    protocol = _build(shard_index, reconstruction_frames=1, animation_frames=2, target_cameras=2)
    for avatar in protocol["avatars"]:
        kinds = [target["split"] for target in avatar["targets"]]
        assert kinds.count("reconstruction") == 1 and kinds.count("animation") == 2
        for target in avatar["targets"]:
            assert len(target["cameras"]) <= 2
            if avatar["video_camera"] in target["cameras"]:
                continue
            pytest.fail("the clip camera is scored at every target frame it sees")


def test_protocol_round_trips_and_feeds_the_dataset(shard_index, tmp_path) -> None:
    protocol = _build(shard_index, same_timestep=True)
    path = write_protocol(protocol, tmp_path / "protocol.json")
    assert load_protocol(path, shard_index) == protocol
    for avatar in protocol["avatars"]:
        assert len({view["frame"] for view in avatar["inputs"]}) == 1  # same_timestep
    dataset = ProtocolDataset(shard_index, protocol, n_views=2)
    items = protocol_items(protocol)
    assert len(dataset) == len(items)
    sample = dataset[1]
    item = items[1]
    cameras = dataset.camera_ids(item["subject"], "input")
    assert [cameras[c] for c in sample["input_camera_index"].tolist()] == [
        v["camera"] for v in item["inputs"][:2]
    ]
    assert sample["input_frames"].tolist() == [v["frame"] for v in item["inputs"][:2]]
    targets = dataset.camera_ids(item["subject"], "supervision")
    assert [targets[c] for c in sample["target_camera_index"].tolist()] == item["cameras"]
    assert int(sample["target_frame"]) == item["frame"]
    with pytest.raises(
        ProtocolError, match=r"the model reads 5 input views, the protocol gives avatar .* only 4"
    ):
        ProtocolDataset(shard_index, protocol, n_views=5)


def _broken(protocol: dict, tmp_path: Path, edit) -> Path:
    broken = json.loads(json.dumps(protocol))
    edit(broken)
    return write_protocol(broken, tmp_path / "broken.json")


def test_protocol_naming_a_missing_camera_or_frame_is_a_clear_error(shard_index, tmp_path) -> None:
    protocol = _build(shard_index)
    subject = protocol["avatars"][0]["subject"]
    first = protocol["avatars"][0]["inputs"][0]

    def camera(p: dict) -> None:
        p["avatars"][0]["inputs"][0]["camera"] = "999999"

    def frame(p: dict) -> None:
        p["avatars"][0]["inputs"][0]["frame"] = 123456789

    def target_camera(p: dict) -> None:
        p["avatars"][0]["targets"][0]["cameras"][0] = "888888"

    def target_frame(p: dict) -> None:
        p["avatars"][0]["targets"][0]["frame"] = 987654321

    def wrong_split(p: dict) -> None:
        target = p["avatars"][0]["targets"][0]
        target["split"] = "animation" if target["split"] == "reconstruction" else "reconstruction"

    def unknown_subject(p: dict) -> None:
        p["avatars"][0]["subject"] = "ZZZ999"

    cases = [
        (camera, f"subject {subject}, camera 999999, frame {first['frame']}, .*not an input camera"),
        (frame, f"subject {subject}, camera {first['camera']}, frame 123456789, .*not an input timestep"),
        (target_camera, f"subject {subject}, camera 888888, frame .*not a supervision camera"),
        (target_frame, f"subject {subject}, frame 987654321, .*not a supervision frame"),
        (wrong_split, f"subject {subject}, frame .*is marked"),
        (unknown_subject, "subject ZZZ999, .*a subject the dataset index does not have"),
    ]
    for edit, message in cases:
        with pytest.raises(ProtocolError, match=message):
            load_protocol(_broken(protocol, tmp_path, edit), shard_index)
    with pytest.raises(ProtocolError, match="format version 99"):
        load_protocol(_broken(protocol, tmp_path, lambda p: p.update(version=99)), shard_index)
    with pytest.raises(ProtocolError, match="protocol file is missing"):
        load_protocol(tmp_path / "absent.json", shard_index)


def test_cli_protocol_writes_the_file_and_a_fixed_file_is_checked(shard_index, tmp_path) -> None:
    from avat3r_core.cli import main

    evaluate = {"split": "train", "seed": 5, "protocol": {"animation_frames": 1}}
    out = tmp_path / "protocol.json"
    args = ["protocol", "--config", json.dumps({"evaluate": evaluate}), "--dataset", "tiny"]
    assert main([*args, "--index", str(shard_index), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["seed"] == 5 and written["dataset"] == "tiny"
    broken = _broken(written, tmp_path, lambda p: p["avatars"][0]["inputs"][0].update(camera="999999"))
    fixed = {"evaluate": dict(evaluate, protocol={"file": str(broken)})}
    again = [
        "protocol",
        "--config",
        json.dumps(fixed),
        "--index",
        str(shard_index),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(again) == 1


# -- the studies as variants --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["studies.yaml", "studies_extra_data.yaml"])
def test_every_study_variant_validates(name) -> None:
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    studies = yaml.safe_load((REPO_ROOT / "configs" / name).read_text())
    merged = dict(config, variants={**config["variants"], **studies["variants"]})
    if "evaluate" in studies:
        merged["evaluate"] = {
            **config["evaluate"],
            "protocol": {**config["evaluate"]["protocol"], **studies["evaluate"]["protocol"]},
        }
    checked = validate_config(merged)
    assert len(studies["variants"]) >= (10 if name == "studies.yaml" else 3)
    for variant in checked["variants"]:
        sections = variant_sections(checked, variant)  # schema of the train keys
        build_model_config(sections["model"])  # ModelConfig rejects unknown or inconsistent fields
        views = sections["train"]["n_views"]
        assert views <= checked["evaluate"]["protocol"]["input_views"], variant


def test_demo_config_runs_two_variants() -> None:
    config = validate_config(yaml.safe_load((REPO_ROOT / "config.yaml").read_text()))
    assert list(config["variants"]) == ["base", "no_skips"]
    cheap = variant_sections(config, "no_skips")
    assert cheap["train"]["steps"] <= 0.4 * config["train"]["steps"]
    model = build_model_config(cheap["model"])
    assert not model.position_skip and not model.colour_skip

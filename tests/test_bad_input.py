"""Broken captures give one clear error line naming subject, camera, frame and file, and write nothing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from avat3r_core.capture.ava256 import Ava256Capture
from avat3r_core.cli import main
from avat3r_core.errors import CaptureError
from tests.helpers import rewrite_member


def decoder(capture, subject: str) -> Path:
    return Ava256Capture(capture.root, subject).decoder


def run_index(capture, subject: str, out: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    config = f'{{"capture": {{"dataset": "ava256", "root": "{capture.root}"}}}}'
    status = main(["-q", "capture-index", "--config", config, "--subject", subject, "--out", str(out)])
    assert status == 1
    assert not out.exists(), "a failed job must not leave its output behind"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temporary files must be cleaned up"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines


def test_missing_calibration(capture_copy, tmp_path: Path, capsys) -> None:
    subject = capture_copy.subjects[0]
    calibration = decoder(capture_copy, subject) / "camera_calibration.json"
    calibration.unlink()
    (line,) = run_index(capture_copy, subject, tmp_path / "out" / "index.json", capsys)
    assert (
        line
        == f"avat3r capture-index: error: subject {subject}, file {calibration}: missing camera calibration"
    )


def test_nan_head_pose(capture_copy, tmp_path: Path, capsys) -> None:
    subject = capture_copy.subjects[0]
    reader = Ava256Capture(capture_copy.root, subject)
    frame = reader.frames()[3].frame
    archive = reader.decoder / "head_pose" / "head_pose.zip"
    rewrite_member(archive, f"{frame:06d}.txt", b"1 0 0 nan\n0 1 0 0\n0 0 1 0\n")
    (line,) = run_index(capture_copy, subject, tmp_path / "index.json", capsys)
    assert f"subject {subject}, frame {frame}, file {archive}:{frame:06d}.txt" in line
    assert "NaN" in line


def test_truncated_zip(capture_copy, tmp_path: Path, capsys) -> None:
    subject = capture_copy.subjects[1]
    archive = decoder(capture_copy, subject) / "head_pose" / "head_pose.zip"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    (line,) = run_index(capture_copy, subject, tmp_path / "index.json", capsys)
    assert f"subject {subject}, file {archive}: not a readable zip (truncated?)" in line


def test_truncated_image_zip_names_the_camera(capture_copy) -> None:
    subject = capture_copy.subjects[0]
    reader = Ava256Capture(capture_copy.root, subject)
    camera = reader.camera_ids[-1]
    archive = reader.decoder / "image" / f"cam{camera}.zip"
    archive.write_bytes(archive.read_bytes()[:1000])
    frame = reader.frames()[0].frame
    with pytest.raises(CaptureError) as caught:
        reader.image(camera, frame)
    assert str(caught.value).startswith(f"subject {subject}, file {archive}: not a readable zip")


def test_corrupt_avif(capture_copy) -> None:
    subject = capture_copy.subjects[0]
    reader = Ava256Capture(capture_copy.root, subject)
    camera = reader.camera_ids[1]
    frame = next(f.frame for f in reader.frames() if reader.has_image(camera, f.frame))
    archive = reader.decoder / "image" / f"cam{camera}.zip"
    member = f"cam{camera}/{frame:06d}.avif"
    with zipfile.ZipFile(archive) as source:
        good = source.read(member)
    rewrite_member(archive, member, good[:40] + b"\x00" * 64)
    reader = Ava256Capture(capture_copy.root, subject)  # fresh handles on the rewritten zip
    with pytest.raises(CaptureError) as caught:
        reader.image(camera, frame)
    message = str(caught.value)
    assert message.startswith(f"subject {subject}, camera {camera}, frame {frame}, file {archive}:{member}: ")
    assert "corrupt image" in message


def test_corrupt_first_image_fails_the_index(capture_copy, tmp_path: Path, capsys) -> None:
    """The index reads the release resolution from the first image: a corrupt one is named there too."""
    subject = capture_copy.subjects[0]
    reader = Ava256Capture(capture_copy.root, subject)
    camera = reader.camera_ids[0]
    archive = reader.decoder / "image" / f"cam{camera}.zip"
    with zipfile.ZipFile(archive) as source:
        member = sorted(source.namelist())[0]
    rewrite_member(archive, member, b"not an avif")
    (line,) = run_index(capture_copy, subject, tmp_path / "index.json", capsys)
    assert f"subject {subject}, camera {camera}, file {archive}:{member}: corrupt image" in line


def test_unknown_subject(synthetic_capture) -> None:
    with pytest.raises(
        CaptureError, match=r"subject ZZZ999, file .*: subject is not in the capture's subject list"
    ):
        Ava256Capture(synthetic_capture.root, "ZZZ999")


def test_camera_with_images_but_no_calibration_is_reported_and_ignored(capture_copy, caplog) -> None:
    import shutil

    from avat3r_core.stages.capture_index import build_capture_index

    subject = capture_copy.subjects[0]
    reader = Ava256Capture(capture_copy.root, subject)
    camera = reader.camera_ids[0]
    shutil.copy(reader.decoder / "image" / f"cam{camera}.zip", reader.decoder / "image" / "cam999999.zip")
    with caplog.at_level("WARNING"):
        index = build_capture_index(Ava256Capture(capture_copy.root, subject))
    assert index["uncalibrated_cameras"] == ["999999"]
    assert "999999" not in index["cameras"]
    assert (
        f"subject {subject}: 1 camera(s) have images but no calibration and are ignored: 999999"
        in caplog.text
    )
    with pytest.raises(CaptureError, match=r"camera 999999, .*camera is not in the calibration"):
        reader.image("999999", reader.frames()[0].frame)

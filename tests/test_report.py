"""Report figures: each drawing function puts known content at known places, the loaders read the stage
stores of the session fixtures, and the Snakemake report of a tiny DAG shows every figure in Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from avat3r_core.report import dome as dome_module
from avat3r_core.report.contact_sheet import contact_sheet, crops_contact_sheet, pick_views
from avat3r_core.report.dome import camera_dome, dome_layout
from avat3r_core.report.draw import BACKGROUND, grid_origin
from avat3r_core.report.position_maps import position_sheet, positions_sheet
from avat3r_core.report.training import (
    COLOURS,
    curve_panels,
    metrics_table_html,
    read_history,
    training_curves,
)

TILE = 32


def pixel(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((round(x), round(y)))


# -- contact sheet -----------------------------------------------------------------------------------------


def test_contact_sheet_puts_each_crop_beside_its_matte() -> None:
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    green = np.zeros((40, 40, 3), np.uint8)  # another size: resized to the tile
    green[..., 1] = 200
    views = [("a", red, np.full((20, 20), 255, np.uint8)), ("b", green, np.zeros((40, 40), np.uint8))]
    sheet = contact_sheet(views, ["title"], tile=TILE, columns=1)
    cell = (2 * TILE, TILE)
    assert sheet.size[1] == 4 + 18 + 2 * (16 + TILE + 4)
    (x0, y0), (x1, y1) = (grid_origin(i, 1, cell, 1) for i in range(2))
    assert pixel(sheet, x0 + TILE / 2, y0 + TILE / 2) == (255, 0, 0)  # crop a
    assert pixel(sheet, x0 + 1.5 * TILE, y0 + TILE / 2) == (255, 255, 255)  # its matte: all foreground
    assert pixel(sheet, x1 + TILE / 2, y1 + TILE / 2) == (0, 200, 0)  # crop b
    assert pixel(sheet, x1 + 1.5 * TILE, y1 + TILE / 2) == (0, 0, 0)  # its matte: all background
    assert pixel(sheet, 1, sheet.size[1] - 1) == BACKGROUND


def test_pick_views_spreads_over_cameras_then_timesteps() -> None:
    valid = np.zeros((6, 5), bool)
    valid[:, 1:4] = True
    valid[2] = False  # a camera without any valid view
    picked = pick_views(valid, 3)
    assert len({c for c, _ in picked}) == 3 and all(valid[c, t] for c, t in picked)
    assert picked[0][0] == 0 and picked[-1][0] == 5  # the two ends of the camera list
    many = pick_views(valid, 8)  # more than the 5 usable cameras: a second timestep of some
    assert len(many) == 8 and len(set(many)) == 8 and all(valid[c, t] for c, t in many)
    assert pick_views(np.zeros((3, 3), bool), 4) == []


# -- position maps -----------------------------------------------------------------------------------------


def test_position_sheet_colours_by_coordinate_and_blacks_out_zero_confidence() -> None:
    size = 32
    ramp = np.linspace(-0.1, 0.1, size, dtype=np.float32)
    xyz = np.zeros((3, size, size), np.float32)
    xyz[0] = ramp[None, :]  # x grows to the right
    xyz[1] = ramp[:, None]  # y grows downwards
    xyz[2] = 0.5
    conf = np.full((size, size), 2.0, np.float32)
    conf[:, : size // 4] = 0.0  # left quarter unknown
    conf[: size // 2, size // 2 :] = 1.0  # half the top-right: half confidence
    sheet, (lo, hi, top) = position_sheet([("v", xyz, conf)], tile=size, columns=1)
    assert top == 2.0
    np.testing.assert_allclose(lo[:2], [ramp[size // 4], -0.1], atol=1e-6)  # over confident pixels only
    np.testing.assert_allclose(hi[:2], [0.1, 0.1], atol=1e-6)
    x, y = grid_origin(0, 1, (2 * size, size), 0)
    assert pixel(sheet, x + 2, y + 16) == (0, 0, 0)  # confidence 0: black
    r, g, _ = pixel(sheet, x + size - 1, y + size - 1)  # largest x and y
    assert r == 255 and g == 255
    r, g, _ = pixel(sheet, x + size // 4, y)  # smallest confident x, smallest y
    assert r == 0 and g == 0
    assert pixel(sheet, x + size + size - 2, y + size - 2) == (255, 255, 255)  # confidence 2 = white
    assert pixel(sheet, x + size + size - 2, y + 2)[0] in (127, 128)  # confidence 1 = mid grey
    assert pixel(sheet, x + size + 2, y + 16) == (0, 0, 0)


# -- camera dome -------------------------------------------------------------------------------------------


def dome_views() -> dict:
    head = np.array([0.0, 0.0, 0.1])

    def at(theta_deg: float, phi_deg: float) -> list[float]:
        t, p = np.radians(theta_deg), np.radians(phi_deg)
        return (head + np.array([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])).tolist()

    centres = {
        "front": at(0, 0),
        "right": at(40, 0),
        "down": at(40, 90),
        "left": at(40, 180),
        "back": at(150, 0),
    }
    return {
        "subject": "TEST01",
        "camera_ids": list(centres),
        "reference_centers": list(centres.values()),
        "max_angle_deg": 110,
        "input_cameras": ["front", "right", "down", "left"],
        "partners": {
            "front": {
                "candidates": ["right", "down", "left"],
                "partners": ["right", "left"],
                "fallbacks": [],
            },
            "right": {"candidates": [], "partners": ["front", "down"], "fallbacks": []},
        },
    }, head


def test_camera_dome_places_cameras_by_angle_and_colours_them_by_role() -> None:
    views, head = dome_views()
    size = 400
    image = camera_dome(views, head, (0, 0, 1), size=size)
    layout = dome_layout(size)
    assert image.size == (size, dome_module.TITLE_H + size + dome_module.LEGEND_H)

    def colour(theta: float, phi_deg: float) -> tuple[int, int, int]:
        return pixel(image, *layout.xy(theta, np.radians(phi_deg)))

    assert colour(0, 0) == dome_module.SELECTED  # nearest the forward axis: highlighted, at the centre
    assert colour(40, 0) == dome_module.PARTNER  # its partners: right (x+) ...
    assert colour(40, 180) == dome_module.PARTNER  # ... and left (x-)
    assert colour(40, 90) == dome_module.INPUT  # input-capable, not a partner: y+ is down in the picture
    assert colour(150, 0) == dome_module.OTHER  # behind the head: not an input
    assert layout.xy(40, np.radians(90))[1] > layout.cy  # down is down
    # The max-angle ring (110 degrees) is drawn in its colour, and nothing else on that ray between.
    ray = [colour(theta, 45) for theta in np.arange(100, 120, 0.25)]
    ring = [theta for theta, c in zip(np.arange(100, 120, 0.25), ray, strict=True) if c == dome_module.LIMIT]
    assert ring and min(ring) > 107 and max(ring) <= 110.5
    chosen = camera_dome(views, head, (0, 0, 1), size=size, highlight="right")
    assert pixel(chosen, *layout.xy(40, 0.0)) == dome_module.SELECTED
    assert pixel(chosen, *layout.xy(40, np.radians(90))) == dome_module.PARTNER


# -- training curves and the metrics table ----------------------------------------------------------------


def test_read_history_keeps_the_last_entry_of_a_step_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "train_log.jsonl"
    lines = [{"step": 1, "total": 1.0}, {"step": 2, "total": 0.8}, {"step": 2, "total": 0.7}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + '\n{"step": 3, "tot')
    assert read_history(path) == [{"step": 1, "total": 1.0}, {"step": 2, "total": 0.7}]


def test_training_curves_draw_each_variant_through_its_points() -> None:
    base = [{"step": s, "total": 1.0 - s / 10, "psnr": 10 + s} for s in range(1, 11)]
    other = [{"step": s, "total": 0.5, "psnr": 12.0} for s in range(1, 11)]
    histories = {"base": base, "other": other}
    image = training_curves(histories, "t")
    panels = dict(curve_panels(histories))
    assert set(panels) == {"total", "psnr"}
    assert image.size[1] > panels["psnr"].top + panels["psnr"].height
    loss = panels["total"]
    first, last = loss.to_pixel(1, 0.9), loss.to_pixel(10, 0.0)
    assert first[0] == pytest.approx(loss.left) and last[0] == pytest.approx(loss.left + loss.width)
    assert first[1] < last[1]  # the loss falls: its first point is higher in the picture
    assert pixel(image, *first) == COLOURS[0] and pixel(image, *last) == COLOURS[0]
    assert pixel(image, *loss.to_pixel(5, 0.5)) in (COLOURS[0], COLOURS[1])  # the curves cross there
    assert pixel(image, *loss.to_pixel(8, 0.5)) == COLOURS[1]
    psnr = panels["psnr"]
    assert pixel(image, *psnr.to_pixel(10, 20)) == COLOURS[0]


def test_metrics_table_lists_methods_subjects_and_the_summary_paths() -> None:
    metrics = {
        "split": "test",
        "items": 2,
        "views_scored": 16,
        "methods": {"model": {"psnr": 21.5, "ssim": 0.7}, "mean_image": {"psnr": 15.25, "ssim": 0.5}},
        "subjects": {"AAC003": {"model/psnr": 21.5, "model/ssim": 0.7}},
        "best_baseline": "mean_image",
        "psnr_gain_over_best_baseline": 6.25,
    }
    page = metrics_table_html({"base": metrics}, {"base": [{"step": 200, "total": 0.125}]}, ["x/summary.csv"])
    assert page.startswith("<!doctype html>")
    for text in (
        "21.50",
        "15.25",
        "mean_image (best baseline)",
        "AAC003",
        "+6.25",
        "0.1250",
        "x/summary.csv",
    ):
        assert text in page, text


# -- the loaders on real stage stores -----------------------------------------------------------------------


def test_figures_from_the_stage_stores(mesh_positions) -> None:
    out = mesh_positions["out"]
    sheet = crops_contact_sheet(out / "crops.zarr", max_views=6, tile=64)
    assert sheet.size[0] == 4 + 4 * (128 + 4)  # 4 columns of crop + matte
    tiles = np.asarray(sheet)[40:, :, :]
    assert (tiles == 255).all(axis=2).any()  # some matte pixels are foreground
    positions = positions_sheet(out / "positions.zarr", max_views=6, tile=64)
    assert positions.size[0] >= sheet.size[0]  # the same grid; its title line may be wider
    assert len(np.unique(np.asarray(positions).reshape(-1, 3), axis=0)) > 100  # coloured, not flat
    views = mesh_positions["views"]
    image = camera_dome(views, mesh_positions["index"].head_center, (0, 0, 1), size=300)
    counts = {
        name: int((np.asarray(image) == np.array(colour)).all(axis=2).sum())
        for name, colour in (("input", dome_module.INPUT), ("other", dome_module.OTHER))
    }
    assert counts["input"] > 0
    assert len(views["input_cameras"]) < len(views["camera_ids"]) and counts["other"] > 0


# -- the whole report in a browser ---------------------------------------------------------------------------

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)

# Appended to a copy of the report: drives the report's own React app (its global `app`) to show every
# result, and writes what the browser decoded into the page, which `--dump-dom` then prints.
PROBE = """
<script>
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  const out = document.createElement("pre");
  out.id = "avat3r-probe";
  const found = {results: {}, menu: "", errors: []};
  try {
    for (let i = 0; i < 100 && typeof app === "undefined"; i++) await sleep(50);
    for (const category of Object.keys(categories)) {
      app.showCategory(category);
      await sleep(50);
      found.menu += " | " + document.querySelector("#app").innerText;
    }
    for (const [path, entry] of Object.entries(results)) {
      const view = entry.mime_type === "text/html" ? "html" : "img";
      app.setView({content: view, contentPath: entry.data_uri, resultPath: path});
      await sleep(50);
      const shown = view === "img" ? document.querySelector("#app img[src^='data:image/png']")
                                   : document.querySelector("#app iframe");
      const record = {mime: entry.mime_type, shown: !!shown && shown.getAttribute("src") === entry.data_uri};
      if (view === "img" && shown) {
        for (let i = 0; i < 200 && !(shown.complete && shown.naturalWidth); i++) await sleep(20);
        record.width = shown.naturalWidth;
        record.height = shown.naturalHeight;
      }
      found.results[path] = record;
    }
  } catch (error) {
    found.errors.push(String(error));
  }
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
})();
</script>
"""


def open_in_chromium(report: Path, tmp_path: Path) -> dict:
    probe = tmp_path / "probe.html"
    head, body_end, tail = report.read_text().rpartition("</body>")
    assert body_end, f"{report} has no </body>"
    probe.write_text(head + PROBE + body_end + tail)
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=8000",  # virtual ms: the probe needs about 1 s of it
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    match = re.search(r'<pre id="avat3r-probe">(.*?)</pre>', result.stdout, re.S)
    assert match, f"the probe did not run in Chromium (rc {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<"))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (Debian) to run it")
def test_report_shows_every_figure_in_chromium(tmp_path: Path) -> None:
    from tests.test_workflow import run_snakemake, tiny_config

    config = tiny_config(tmp_path)  # 2 subjects (one held out), 6 cameras, 2 training steps
    sections = yaml.safe_load(config.read_text())
    sections["variants"] = {"base": {}}
    config.write_text(yaml.safe_dump(sections))
    started = time.monotonic()
    run = run_snakemake(tmp_path, "--configfile", str(config), "--cores", "2", "report_figures")
    built = time.monotonic() - started
    assert "avat3r plan for this run" in run.stderr and "GPU hours" in run.stderr  # onstart
    report = tmp_path / "report.html"
    run_snakemake(tmp_path, "--configfile", str(config), "--report", str(report), "report_figures")
    html = report.read_text()
    figures = tmp_path / "results" / "report"
    subjects = sorted(p.parent.name for p in figures.glob("*/crops.png"))
    variants = sorted(p.parent.name for p in figures.glob("train/*/curves.png"))
    expected = {f"results/report/{s}/{f}.png" for s in subjects for f in ("crops", "positions", "dome")}
    expected |= {f"results/report/train/{v}/{f}" for v in variants for f in ("curves.png", "grid.png")}
    expected |= {f"results/report/train/{v}/metrics.html" for v in variants}
    assert subjects and variants
    found = open_in_chromium(report, tmp_path)
    assert not found["errors"], found["errors"]
    assert set(found["results"]) == expected
    for path, record in found["results"].items():
        assert record["shown"], (path, record)
        if path.endswith(".png"):
            with Image.open(tmp_path / path) as image:
                assert (record["width"], record["height"]) == image.size, path
    for category in ("Crops and mattes", "Position maps", "Camera dome", "Training", *subjects, *variants):
        assert category in found["menu"], category
    # Self-contained: every figure is embedded as a data URI, nothing is fetched from elsewhere.
    embedded = re.findall(r'"data_uri": "data:image/png;[^",]*base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len([p for p in expected if p.endswith(".png")])
    Image.open(io.BytesIO(base64.b64decode(embedded[0]))).verify()
    assert not re.search(r'<(?:script|img|link)[^>]+(?:src|href)="https?:', html)
    print(f"DAG to report_figures: {built:.0f} s")
    assert os.path.getsize(report) < 50e6

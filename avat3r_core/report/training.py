"""Training curves (train/{variant}/train_log.jsonl) and the held-out metrics table
(evaluate/{variant}/metrics.json) of each training variant."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from avat3r_core.report.draw import font

WHITE = (255, 255, 255)
INK = (30, 30, 30)
GRID = (225, 225, 225)
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
PANELS = {
    "total": "training loss (total)",
    "psnr": "training PSNR (dB, last batch)",
    "step_s": "seconds per step",
}
PANEL_W, PANEL_H = 640, 220
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 20, 26, 26
TITLE_H = 24


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The logged steps of a run in step order. A resumed run appends to the file, so a step logged twice
    keeps its last entry; a torn last line (the run was killed mid-write) is skipped."""
    by_step: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "step" in entry:
            by_step[int(entry["step"])] = entry
    return [by_step[step] for step in sorted(by_step)]


@dataclass(frozen=True)
class Panel:
    """One plot: its box in the figure and its data ranges; `to_pixel` maps (step, value) into the box."""

    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        px = self.left + (x - x0) / (x1 - x0) * self.width
        py = self.top + self.height - (y - y0) / (y1 - y0) * self.height
        return px, py


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.5 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def curve_panels(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> list[tuple[str, Panel]]:
    """The panels `training_curves` draws: one per logged key of PANELS, stacked, in figure pixels."""
    keys = [k for k in PANELS if any(k in entry for h in histories.values() for entry in h)]
    steps = [entry["step"] for h in histories.values() for entry in h]
    x_range = (min(steps), max(steps)) if steps else (0, 1)
    if x_range[0] == x_range[1]:
        x_range = (x_range[0] - 1, x_range[1] + 1)
    panels = []
    for i, key in enumerate(keys):
        values = [entry[key] for h in histories.values() for entry in h if key in entry]
        panels.append(
            (
                key,
                Panel(
                    left=MARGIN_L,
                    top=TITLE_H + i * PANEL_H + MARGIN_T,
                    width=PANEL_W - MARGIN_L - MARGIN_R,
                    height=PANEL_H - MARGIN_T - MARGIN_B,
                    x_range=x_range,
                    y_range=_range(values),
                ),
            )
        )
    return panels


def training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], title: str = "") -> Image.Image:
    """Loss, PSNR and step time against the step, one colour per variant (`histories`: variant -> entries
    of `read_history`)."""
    panels = curve_panels(histories)
    image = Image.new("RGB", (PANEL_W, TITLE_H + max(len(panels), 1) * PANEL_H + 20), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((8, 4), title or "training curves", fill=INK, font=font(13))
    if not panels:
        draw.text((8, TITLE_H + 10), "no logged steps (train_log.jsonl is empty)", fill=INK, font=font(12))
    for key, panel in panels:
        box = [panel.left, panel.top, panel.left + panel.width, panel.top + panel.height]
        draw.text((panel.left, panel.top - 18), PANELS[key], fill=INK, font=font(12))
        for fraction in (0.25, 0.5, 0.75):
            y = panel.top + panel.height * fraction
            draw.line([panel.left, y, panel.left + panel.width, y], fill=GRID)
        draw.rectangle(box, outline=INK)
        (x0, x1), (y0, y1) = panel.x_range, panel.y_range
        for value, y in ((y1, panel.top), (y0, panel.top + panel.height)):
            draw.text((4, y - 6), f"{value:.4g}", fill=INK, font=font(10))
        for value, anchor in ((x0, "la"), (x1, "ra")):
            x = panel.left if anchor == "la" else panel.left + panel.width
            draw.text(
                (x, panel.top + panel.height + 4), f"step {value:g}", fill=INK, font=font(10), anchor=anchor
            )
        for n, history in enumerate(histories.values()):
            points = [panel.to_pixel(e["step"], e[key]) for e in history if key in e]
            colour = COLOURS[n % len(COLOURS)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points if len(points) <= 40 else points[-1:]:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    x = 8
    y = image.height - 18
    for n, variant in enumerate(histories):
        colour = COLOURS[n % len(COLOURS)]
        draw.line([x, y + 6, x + 20, y + 6], fill=colour, width=3)
        draw.text((x + 24, y), variant, fill=INK, font=font(11))
        x += 40 + int(draw.textlength(variant, font=font(11)))
    return image


def metrics_table_html(
    metrics: Mapping[str, Mapping[str, Any]],
    histories: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
    summary_paths: Sequence[str] = (),
) -> str:
    """A self-contained HTML page: per variant, PSNR and SSIM of the model and the baselines on the held-out
    split, the gain over the best baseline, per-subject model scores and the last logged training step."""
    histories = histories or {}
    rows = []
    for variant, m in metrics.items():
        methods = m.get("methods", {})
        for method, scores in methods.items():
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(v))}</td>"
                    for v in (
                        variant,
                        method + (" (best baseline)" if method == m.get("best_baseline") else ""),
                        f"{scores.get('psnr', float('nan')):.2f}",
                        f"{scores.get('ssim', float('nan')):.4f}",
                    )
                )
                + "</tr>"
            )
    subjects = []
    for variant, m in metrics.items():
        for subject, scores in m.get("subjects", {}).items():
            subjects.append(
                f"<tr><td>{html.escape(variant)}</td><td>{html.escape(subject)}</td>"
                f"<td>{scores.get('model/psnr', float('nan')):.2f}</td>"
                f"<td>{scores.get('model/ssim', float('nan')):.4f}</td></tr>"
            )
    summary = []
    for variant, m in metrics.items():
        last = (histories.get(variant) or [{}])[-1]
        summary.append(
            f"<tr><td>{html.escape(variant)}</td><td>{html.escape(str(m.get('split', '')))}</td>"
            f"<td>{m.get('items', '')}</td><td>{m.get('views_scored', '')}</td>"
            f"<td>{m.get('psnr_gain_over_best_baseline', float('nan')):+.2f}</td>"
            f"<td>{last.get('step', '')}</td><td>{last.get('total', float('nan')):.4f}</td></tr>"
        )
    paths = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in summary_paths)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>avat3r metrics</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #bbb; padding: 3px 8px; text-align: right; }}
th {{ background: #eee; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
</style></head><body>
<h2>Held-out evaluation</h2>
<table id="summary"><tr><th>variant</th><th>split</th><th>items</th><th>views scored</th>
<th>PSNR gain over best baseline (dB)</th><th>last logged step</th><th>its training loss</th></tr>
{"".join(summary)}</table>
<table id="methods"><tr><th>variant</th><th>method</th><th>PSNR (dB)</th><th>SSIM</th></tr>
{"".join(rows)}</table>
<h3>Model per held-out subject</h3>
<table id="subjects"><tr><th>variant</th><th>subject</th><th>PSNR (dB)</th><th>SSIM</th></tr>
{"".join(subjects)}</table>
{f"<p>Across variants (rule gather):</p><ul>{paths}</ul>" if paths else ""}
</body></html>
"""


def write_text_atomic(text: str, path: str | Path) -> Path:
    from avat3r_core.store.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path

"""Every variant's evaluation in one table and one plot: the paper's studies side by side.

Reads each variant's ``metrics.json`` (:mod:`.evaluate`) and writes ``summary.csv`` and ``summary.json``
(one row per variant, split and method: the mean of each metric, null/empty when unavailable, plus the
protocol and input-position mode each variant was scored with) and ``summary.png``: PSNR, SSIM and LPIPS of
the model per variant, one bar per split. Drawn with Pillow alone (the train environment has no
matplotlib); an unavailable metric is drawn as "n/a", never as a zero bar.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from avat3r_core.errors import Avat3rError
from avat3r_core.recon.evaluate import METRICS, SPLITS
from avat3r_core.store.atomic import atomic_path, write_json_atomic

log = logging.getLogger("avat3r.gather")

COLUMNS = ("variant", "split", "method", "views", *METRICS, "positions", "protocol_sha256")
PLOTTED = (
    ("psnr", "PSNR in dB (higher better)"),
    ("ssim", "SSIM (higher better)"),
    ("lpips", "LPIPS (lower better)"),
)
SPLIT_COLOURS = {"reconstruction": (66, 133, 244), "animation": (234, 67, 53), "all": (90, 90, 90)}


def gather_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows (variant, split, method) with the mean of every metric, from {variant: metrics.json content}."""
    rows = []
    for variant, summary in metrics.items():
        if "results" not in summary:
            raise Avat3rError(
                f"variant {variant}: metrics.json has no per-split results (written by an older "
                "avat3r evaluate; rerun the evaluate rule)"
            )
        for split, methods in summary["results"].items():
            for method, entry in methods.items():
                rows.append(
                    {
                        "variant": variant,
                        "split": split,
                        "method": method,
                        "views": entry["views"],
                        **{metric: entry["mean"].get(metric) for metric in METRICS},
                        "positions": summary.get("positions"),
                        "protocol_sha256": summary.get("protocol", {}).get("sha256"),
                    }
                )
    return rows


def gather(paths: Sequence[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Read ``{variant}/metrics.json`` files (variant = the parent folder's name) and write the summaries."""
    metrics = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise Avat3rError(f"metrics file {path} is missing")
        metrics[path.parent.name] = json.loads(path.read_text())
    protocols = {v: m.get("protocol", {}).get("sha256") for v, m in metrics.items()}
    if len(set(protocols.values())) > 1:
        log.warning("variants were scored on different protocols: %s", protocols)
    rows = gather_rows(metrics)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "variants": list(metrics),
        "columns": list(COLUMNS),
        "rows": rows,
        "metrics": {v: m.get("metrics", {}) for v, m in metrics.items()},
        "same_protocol": len(set(protocols.values())) == 1,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    with atomic_path(out_dir / "summary.csv") as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in COLUMNS})
    picture = summary_plot(rows, list(metrics))
    with atomic_path(out_dir / "summary.png") as temporary:
        picture.save(temporary, format="PNG")
    log.info("%d variants gathered into %s", len(metrics), out_dir)
    return summary


def summary_plot(
    rows: Sequence[Mapping[str, Any]], variants: Sequence[str], method: str = "model"
) -> Image.Image:
    """One panel per metric: per variant one bar per split (the model's mean), the "all" value below."""
    font = ImageFont.load_default()
    group = 18 * len(SPLITS) + 24
    panel_w, panel_h, top, bottom, left = max(260, 40 + group * len(variants)), 260, 40, 60, 50
    image = Image.new("RGB", (panel_w * len(PLOTTED), panel_h + 30), "white")
    draw = ImageDraw.Draw(image)
    value = {(r["variant"], r["split"]): r for r in rows if r["method"] == method}
    for p, (metric, title) in enumerate(PLOTTED):
        x0 = p * panel_w
        draw.text((x0 + left, 10), f"{title}, {method}", fill="black", font=font)
        numbers = [value[k][metric] for k in value if value[k][metric] is not None]
        high = max(numbers) * 1.1 if numbers else 1.0
        base = panel_h - bottom
        draw.line([(x0 + left - 4, top), (x0 + left - 4, base)], fill="black")
        draw.line([(x0 + left - 4, base), (x0 + panel_w - 10, base)], fill="black")
        draw.text((x0 + 4, top - 6), f"{high:.3g}", fill="black", font=font)
        draw.text((x0 + 4, base - 6), "0", fill="black", font=font)
        for v, variant in enumerate(variants):
            gx = x0 + left + v * group
            for s, split in enumerate(SPLITS):
                bx = gx + s * 18
                number = value.get((variant, split), {}).get(metric)
                if number is None:
                    draw.text((bx, base - 12), "n/a", fill=SPLIT_COLOURS[split], font=font)
                    continue
                height = (base - top) * max(number, 0.0) / high
                draw.rectangle([bx, base - height, bx + 14, base], fill=SPLIT_COLOURS[split])
            draw.text((gx, base + 6), variant[:14], fill="black", font=font)
            overall = value.get((variant, "all"), {}).get(metric)
            draw.text(
                (gx, base + 20), "n/a" if overall is None else f"{overall:.4g}", fill="black", font=font
            )
    for s, split in enumerate(SPLITS):
        x = 10 + s * 130
        draw.rectangle([x, panel_h + 8, x + 12, panel_h + 20], fill=SPLIT_COLOURS[split])
        draw.text((x + 16, panel_h + 8), split, fill="black", font=font)
    return image

"""Batch statistics kept for every validated batch, and a drift page that plots them over time.

Each validation appends one line to <reports>/batch_stats.jsonl: per view, the median, spread and count of
every drift statistic, the reference batch it was compared with and the verdict. drift.html, beside the
Data Docs index, draws each statistic over the batches (latest validation of each) with the band a batch
must stay in: its reference's median +- validation.drift_z_warn reference standard deviations. The page is
plain HTML with inline SVG: it needs no script and no network.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from garmentseg.validation.report import DRIFT_STATS

log = logging.getLogger(__name__)

STATS_FILE = "batch_stats.jsonl"
DRIFT_PAGE = "drift.html"
_W, _H, _PAD = 640, 170, 36


def batch_statistics(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{"<stat>/<view>": {"median", "sd", "n"}} over the batch's files (the numbers drift is judged on)."""
    out = {}
    for stat in DRIFT_STATS:
        for view in sorted(frame["view"].dropna().unique()):
            values = frame.loc[frame["view"] == view, stat].dropna().astype(float)
            if not values.empty:
                out[f"{stat}/{view}"] = {
                    "median": round(float(values.median()), 4),
                    "sd": round(float(values.std(ddof=0)), 4),
                    "n": len(values),
                }
    return out


def compare_statistics(
    current: dict[str, dict[str, float]], reference: dict[str, dict[str, float]], z_warn: float
) -> dict[str, Any]:
    """Each statistic both sides have (`batch_statistics` shape): its median's shift in reference stdevs.

    Returns {"<stat>/<view>": {"reference", "current", "shift_sd", "drifted"}}; a statistic is `drifted`
    when its median moved by more than `z_warn` reference standard deviations.
    """
    out: dict[str, Any] = {}
    for key, cur in current.items():
        ref = reference.get(key)
        if ref is None:
            continue
        spread = ref["sd"] if ref["n"] > 1 else 0.0
        z = (cur["median"] - ref["median"]) / max(spread, 1e-6 * max(1.0, abs(ref["median"])))
        out[key] = {
            "reference": ref["median"],
            "current": cur["median"],
            "shift_sd": round(z, 2),
            "drifted": abs(z) > z_warn,
        }
    return out


def record_batch(
    reports_root: Path,
    batch_id: str,
    frame: pd.DataFrame,
    *,
    passed: bool,
    reference: str | None,
    drift: dict[str, Any] | None,
) -> Path:
    """Append the batch's statistics to the history (one JSON line; a re-validation adds a newer line)."""
    path = Path(reports_root) / STATS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "batch_id": batch_id,
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": passed,
        "reference": reference,
        "stats": batch_statistics(frame),
        "drifted": sorted(k for k, v in (drift or {}).items() if v["drifted"]),
    }
    with path.open("a") as handle:  # one short O_APPEND write: concurrent validations do not interleave
        handle.write(json.dumps(line) + "\n")
    return path


def read_history(reports_root: Path) -> list[dict[str, Any]]:
    """The latest line per batch, oldest batch first."""
    path = Path(reports_root) / STATS_FILE
    if not path.is_file():
        return []
    latest: dict[str, dict[str, Any]] = {}
    for text in path.read_text().splitlines():
        if text.strip():
            entry = json.loads(text)
            latest.pop(entry["batch_id"], None)
            latest[entry["batch_id"]] = entry
    return sorted(latest.values(), key=lambda e: e["validated_at"])


def write_drift_page(reports_root: Path, docs_dir: Path, z_warn: float) -> Path:
    """drift.html beside the Data Docs index: one chart per statistic and view, over the batches."""
    history = read_history(reports_root)
    by_id = {e["batch_id"]: e for e in history}
    order = {stat: i for i, stat in enumerate(DRIFT_STATS)}
    keys = sorted({k for e in history for k in e["stats"]}, key=lambda k: (order[k.split("/")[0]], k))
    charts = "".join(_chart(key, history, by_id, z_warn) for key in keys)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Batch drift</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} h2{{font-size:15px;margin:18px 0 4px}}
.note{{color:#555;max-width:60em}} svg text{{font-size:10px;fill:#444}}</style></head><body>
<h1>Batch statistics over time</h1>
<p class="note">{len(history)} batches, each at its latest validation. Line: the batch's median; grey band:
its reference batch's median &plusmn; {z_warn:g} reference standard deviations (validation.drift_z_warn);
a red point moved beyond it. <a href="index.html">Data Docs</a></p>{charts or "<p>No batch yet.</p>"}
</body></html>
"""
    out = Path(docs_dir) / DRIFT_PAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def _chart(key: str, history: list[dict[str, Any]], by_id: dict[str, dict], z_warn: float) -> str:
    points = []  # (index, batch, median, band or None, drifted)
    for i, entry in enumerate(history):
        stat = entry["stats"].get(key)
        if stat is None:
            continue
        ref = by_id.get(entry["reference"] or "", {}).get("stats", {}).get(key)
        band = (ref["median"] - z_warn * ref["sd"], ref["median"] + z_warn * ref["sd"]) if ref else None
        points.append((i, entry["batch_id"], stat["median"], band, key in entry["drifted"]))
    values = [p[2] for p in points] + [b for p in points if p[3] for b in p[3]]
    lo, hi = min(values), max(values)
    span = (hi - lo) or max(abs(hi), 1.0)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    step = (_W - 2 * _PAD) / max(1, len(history) - 1)

    def x(i: int) -> float:
        return _PAD + i * step

    def y(v: float) -> float:
        return _H - _PAD - (v - lo) / (hi - lo) * (_H - 2 * _PAD)

    parts = [
        f'<rect x="{x(i) - 4:.1f}" y="{y(b[1]) - 1:.1f}" width="8" height="{y(b[0]) - y(b[1]) + 2:.1f}" '
        'fill="#ccc"/>'
        for i, _, _, b, _ in points
        if b
    ]
    parts.append(
        '<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="'
        + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, _, v, _, _ in points)
        + '"/>'
    )
    for i, batch, v, _, drifted in points:
        colour = "#c62828" if drifted else "#1565c0"
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="{colour}">'
            f"<title>{html.escape(batch)}: {v:g}</title></circle>"
            f'<text x="{x(i):.1f}" y="{_H - _PAD + 14}" text-anchor="middle">{html.escape(batch[-14:])}</text>'
        )
    parts.append(
        f'<text x="2" y="{y(hi) + 8:.1f}">{hi:.3g}</text><text x="2" y="{y(lo):.1f}">{lo:.3g}</text>'
    )
    return (
        f'<h2 id="{html.escape(key)}">{html.escape(key)}</h2>'
        f'<svg width="{_W}" height="{_H}" role="img" aria-label="{html.escape(key)}">{"".join(parts)}</svg>'
    )

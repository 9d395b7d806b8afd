"""The audit on disk for stewards: `audit.json` (every pair, ranked) and `index.html` (the suspects with their
overlays, and what a retrain left out), beside the overlays in one folder."""

from __future__ import annotations

import html
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from garmentseg.labels.audit import Suspect

AUDIT_JSON = "audit.json"
INDEX_HTML = "index.html"
SHOWN = 24  # suspects pictured on the page; audit.json holds every pair


def _row(s: Suspect, out_dir: Path, data: Path | None, left_out: bool) -> str:
    img = ""
    if s.overlay:
        src = html.escape(
            Path(s.overlay).relative_to(out_dir).as_posix()
            if Path(s.overlay).is_relative_to(out_dir)
            else s.overlay
        )
        img = f'<img src="{src}" alt="overlay of {html.escape(s.file)}" height="216">'
    sample = " (in-sample)" if s.in_sample else ""
    sample += " <b>(a retrain leaves it out)</b>" if left_out else ""
    where = f" --data {shlex.quote(str(data))}" if data else ""
    command = html.escape(f"garmentseg labels confirm|release {s.file}{where}")
    return (
        f"<tr><td>{s.score:.3f}</td><td>{html.escape(s.file)}{sample}<br><small>{html.escape(s.reason)}</small>"
        f"<br><code>{command}</code></td><td>{img}</td></tr>"
    )


def write_report(
    out_dir: Path,
    suspects: list[Suspect],
    *,
    model_uri: str,
    excluded: pd.DataFrame | None = None,
    data: Path | None = None,
    would_exclude: tuple[float, set[str]] | None = None,
    not_audited: Sequence[str] = (),
) -> Path:
    """Write audit.json and index.html into out_dir; returns the page's path. `data`: the audited batch or
    data dir, named in the page's commands (default: the configured data dir). `would_exclude`: the
    exclusion score and the pairs a retrain would leave out, marked on the page; `not_audited`: the files
    the audit could not pair, listed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"model_uri": model_uri, "suspects": [s.as_dict() for s in suspects]}
    left_out = ""
    if excluded is not None:
        record["excluded"] = [
            {"file": f"{r.garment_id}_{r.view}", "cutout_sha256": r.cutout_sha256, "why": r.why}
            for r in excluded.itertuples()
        ]
        items = "".join(
            f"<li>{html.escape(e['file'])}: {html.escape(e['why'])}</li>" for e in record["excluded"]
        )
        left_out = f"<h2>Left out of this training run ({len(record['excluded'])})</h2><ul>{items}</ul>"
    threshold, leaving = would_exclude or (None, set())
    if would_exclude is not None:
        left_out += (
            f"<p>A retrain leaves out the {len(leaving)} pairs scored {threshold:g} or more "
            "(labels.exclude_score) and those a steward confirmed wrong; marked below.</p>"
        )
    if not_audited:
        record["not_audited"] = list(not_audited)
        items = "".join(f"<li>{html.escape(line)}</li>" for line in not_audited)
        left_out += f"<h2>Not audited ({len(not_audited)})</h2><ul>{items}</ul>"
    (out_dir / AUDIT_JSON).write_text(json.dumps(record, indent=2))
    rows = "".join(_row(s, out_dir, data, s.file in leaving) for s in suspects[:SHOWN])
    page = (
        "<!doctype html><meta charset=utf-8><title>Label audit</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}</style>"
        f"<h1>Label audit</h1><p>Model {html.escape(model_uri)}; {len(suspects)} pairs, the labels most likely "
        f"wrong first (the top {min(SHOWN, len(suspects))} shown; every pair in {AUDIT_JSON}). Overlay: the label "
        "(green) | the model's mask (blue) | blue where the label leaves out what the model sees, red where "
        f"it covers what the model calls background.</p>{left_out}"
        f"<table><tr><th>score</th><th>pair and reason</th><th>overlay</th></tr>{rows}</table>"
    )
    path = out_dir / INDEX_HTML
    path.write_text(page)
    return path

"""Batch statistics kept for every batch, and the drift page that plots them with their threshold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from garmentseg.validation.drift import (
    DRIFT_PAGE,
    STATS_FILE,
    batch_statistics,
    read_history,
    record_batch,
    write_drift_page,
)
from garmentseg.validation.report import compare_batches


def _frame(rng: np.random.Generator, brightness: float) -> pd.DataFrame:
    n = 12
    return pd.DataFrame(
        {
            "view": ["Front"] * n,
            "garment_fraction": rng.normal(0.25, 0.02, n),
            "brightness": rng.normal(brightness, 3.0, n),
            "contrast": rng.normal(150, 10, n),
            "alpha_partial_share": np.zeros(n),
        }
    )


def test_history_keeps_every_batch_and_the_page_marks_the_drifted_one(tmp_path):
    rng = np.random.default_rng(0)
    frames = {"b1": _frame(rng, 200), "b2": _frame(rng, 201), "b3": _frame(rng, 240)}
    reference = None
    for batch_id, frame in frames.items():
        drift = compare_batches(frame, frames[reference], 3.0) if reference else None
        record_batch(tmp_path, batch_id, frame, passed=True, reference=reference, drift=drift)
        reference = batch_id
    record_batch(tmp_path, "b2", frames["b2"], passed=True, reference="b1", drift=None)  # re-validated
    history = read_history(tmp_path)
    assert [e["batch_id"] for e in history] == ["b1", "b3", "b2"]  # latest validation of each
    assert len((tmp_path / STATS_FILE).read_text().splitlines()) == 4
    b3 = next(e for e in history if e["batch_id"] == "b3")
    assert b3["drifted"] == ["brightness/Front"] and b3["reference"] == "b2"
    assert b3["stats"]["brightness/Front"]["n"] == 12

    page = write_drift_page(tmp_path, tmp_path / "docs", 3.0).read_text()
    assert (tmp_path / "docs" / DRIFT_PAGE).is_file()
    charts = page.split("<h2 ")[1:]
    assert len(charts) == 4 and charts[0].startswith('id="garment_fraction/Front"')
    brightness = next(c for c in charts if c.startswith('id="brightness/Front"'))
    assert brightness.count("<circle") == 3 and brightness.count('fill="#c62828"') == 1  # b3 only
    assert brightness.count("<rect") == 2  # b2 and b3 have a reference band; b1 has none
    assert "http" not in page.replace('href="index.html"', "")


def test_batch_statistics_are_per_view():
    frame = pd.DataFrame(
        {
            "view": ["Front", "Front", "Back", None],
            "garment_fraction": [0.2, 0.4, 0.3, None],
            "brightness": [100.0, 120.0, None, 50.0],
            "contrast": [None, None, None, None],
            "alpha_partial_share": [0.0, 0.0, 0.0, None],
        }
    )
    stats = batch_statistics(frame)
    assert stats["garment_fraction/Front"] == {"median": 0.3, "sd": 0.1, "n": 2}
    assert "brightness/Back" not in stats and not any(k.startswith("contrast/") for k in stats)
    json.dumps(stats)

"""Findings, summary counts, batch drift and the files a report folder holds (findings.json is the API)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from garmentseg.data.contract import CUTOUT_DIR
from garmentseg.validation.suite import BATCH_FILE, INDEX_COLUMN, SuiteRun

FINDINGS_JSON = "findings.json"
METADATA_PARQUET = "metadata.parquet"
SUMMARY_JSON = "summary.json"
GALLERY_HTML = "gallery.html"
# Per-view statistics a later batch is compared against.
DRIFT_STATS = ("garment_fraction", "brightness", "contrast", "alpha_partial_share")


def findings_from(run: SuiteRun, frame: pd.DataFrame) -> list[dict[str, str]]:
    """One finding per (file, failing expectation), worded from that file's metadata row."""
    rows = frame.set_index(INDEX_COLUMN, drop=False)
    findings = []
    for spec, files in run.failures:
        for file in files:
            row: dict[str, Any] = {} if file == BATCH_FILE else _plain(rows.loc[file].to_dict())
            findings.append(
                {"file": file, "check": spec.check, "severity": spec.severity, "message": spec.message(row)}
            )
    findings.sort(key=lambda f: (f["severity"] != "error", f["file"], f["check"]))
    return findings


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()
    }


def summarize(findings: list[dict[str, str]], frame: pd.DataFrame | None) -> dict[str, Any]:
    """Counts a platform engineer reads at a glance."""
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    present = (
        frame[frame["present"].fillna(True).astype(bool) & frame["os_junk"].isna()]
        if frame is not None
        else None
    )
    return {
        "files": 0 if present is None else len(present),
        "pairs": 0 if present is None else _count_pairs(present),
        "errors": len(errors),
        "warnings": len(warnings),
        "flagged_files": len({f["file"] for f in errors}),
        "errors_by_check": dict(sorted(Counter(f["check"] for f in errors).items())),
        "warnings_by_check": dict(sorted(Counter(f["check"] for f in warnings).items())),
    }


def _count_pairs(frame: pd.DataFrame) -> int:
    cut = frame[frame["side"] == CUTOUT_DIR]
    paired = cut["garment_id"].notna() & cut["partner_missing"].isna() & cut["duplicate_of"].isna()
    return int((paired & cut["name_error"].isna()).sum())


def worst_files(findings: list[dict[str, str]], limit: int = 5) -> list[tuple[str, list[str]]]:
    """Files with the most error findings, each with its checks."""
    by_file: dict[str, list[str]] = {}
    for f in findings:
        if f["severity"] == "error":
            by_file.setdefault(f["file"], []).append(f["check"])
    return sorted(by_file.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]


def compare_batches(current: pd.DataFrame, reference: pd.DataFrame, z_warn: float = 3.0) -> dict[str, Any]:
    """Per-view medians of the batch statistics against a reference batch's (`drift.compare_statistics`)."""
    from garmentseg.validation.drift import batch_statistics, compare_statistics

    return compare_statistics(batch_statistics(current), batch_statistics(reference), z_warn)


def find_reference(reports_root: Path, exclude: Path) -> Path | None:
    """The most recent passing batch's metadata.parquet under the reports folder, other than `exclude`."""
    candidates = []
    for summary in reports_root.glob(f"*/{SUMMARY_JSON}"):
        folder = summary.parent
        if folder.resolve() == exclude.resolve() or not (folder / METADATA_PARQUET).is_file():
            continue
        try:
            passed = json.loads(summary.read_text()).get("passed")
        except (OSError, ValueError):
            continue
        if passed:
            candidates.append((summary.stat().st_mtime, folder / METADATA_PARQUET))
    return max(candidates)[1] if candidates else None


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)

"""validate_batch: metadata table -> GX suite -> findings.json, metadata.parquet, gallery, Data Docs."""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from garmentseg.config import Config, ConfigError
from garmentseg.data.contract import ContractError, batch_id_of
from garmentseg.validation.drift import record_batch, write_drift_page
from garmentseg.validation.gallery import write_gallery
from garmentseg.validation.metadata import build_metadata
from garmentseg.validation.report import (
    FINDINGS_JSON,
    GALLERY_HTML,
    METADATA_PARQUET,
    SUMMARY_JSON,
    compare_batches,
    find_reference,
    findings_from,
    summarize,
    worst_files,
    write_json,
)
from garmentseg.validation.suite import BATCH_FILE, build_checks, run_suite

log = logging.getLogger(__name__)

EXIT_PASSED, EXIT_FAILED, EXIT_UNREADABLE = 0, 1, 2


@dataclass
class ValidationResult:
    """The verdict on one batch and where its report lives."""

    batch_id: str
    batch_dir: Path
    source: str
    passed: bool
    exit_code: int
    findings: list[dict[str, str]]
    report_dir: Path
    summary: dict[str, Any]
    data_docs_index: Path | None = None
    data_docs_page: Path | None = None
    gallery: Path | None = None
    metadata: pd.DataFrame | None = field(default=None, repr=False)
    drift: dict[str, Any] | None = None
    reference: Path | None = None
    drift_page: Path | None = None

    @property
    def findings_path(self) -> Path:
        return self.report_dir / FINDINGS_JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no findings list, no table) for XCom, logs and summary.json."""
        paths = (
            "batch_dir",
            "report_dir",
            "data_docs_index",
            "data_docs_page",
            "gallery",
            "reference",
            "drift_page",
        )
        out: dict[str, Any] = {k: (str(getattr(self, k)) if getattr(self, k) else None) for k in paths}
        out.update(
            batch_id=self.batch_id,
            source=self.source,
            passed=self.passed,
            exit_code=self.exit_code,
            summary=self.summary,
            drift=self.drift,
            findings=str(self.findings_path),
        )
        return out

    def text(self, worst: int = 5) -> str:
        """A short human summary: verdict, counts per check, the worst files, drift, where to look."""
        s = self.summary
        verdict = {EXIT_PASSED: "PASSED", EXIT_FAILED: "FAILED", EXIT_UNREADABLE: "UNREADABLE"}[
            self.exit_code
        ]
        lines = [
            f"batch {self.batch_id} (source {self.source}): {verdict}: {s['files']} files, {s['pairs']} pairs, "
            f"{s['errors']} errors in {s['flagged_files']} files, {s['warnings']} warnings"
        ]
        for label, key in (("errors", "errors_by_check"), ("warnings", "warnings_by_check")):
            if s[key]:
                lines.append(f"  {label} by check: " + ", ".join(f"{c} {n}" for c, n in s[key].items()))
        worst_list = worst_files(self.findings, worst)
        if worst_list:
            lines.append("  worst files:")
            messages = {(f["file"], f["check"]): f["message"] for f in self.findings}
            for file, checks in worst_list:
                lines.append(
                    f"    {file}: {checks[0]}: {messages[(file, checks[0])]}"
                    + (f" (+{len(checks) - 1} more)" if len(checks) > 1 else "")
                )
        if self.drift:
            moved = {k: v for k, v in self.drift.items() if v["drifted"]}
            lines.append(
                f"  drift vs {self.reference.parent.name if self.reference else 'reference'}: "
                + (
                    ", ".join(
                        f"{k} {v['reference']:g} -> {v['current']:g} ({v['shift_sd']:+.1f} sd)"
                        for k, v in moved.items()
                    )
                    or "no statistic moved beyond the threshold"
                )
            )
        for label, path in (
            ("Data Docs", self.data_docs_page or self.data_docs_index),
            ("gallery", self.gallery),
            ("drift over batches", self.drift_page),
            ("findings", self.findings_path),
        ):
            if path:
                lines.append(f"  {label}: {path}")
        return "\n".join(lines)


def _prefetch_great_expectations() -> threading.Thread:
    """Import GX (seconds) while the workers read the batch: its cost then hides behind the decoding."""
    thread = threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True)
    thread.start()
    return thread


def validate_batch(
    batch_dir: Path,
    cfg: Config,
    report_dir: Path | None = None,
    source: str | None = None,
    reference: Path | None = None,
    batch_id: str | None = None,
) -> ValidationResult:
    """Validate a delivered batch; write its report; exit_code 0 pass, 1 fail, 2 not a batch at all.
    `batch_id`: the id ingest gives the batch (its report, its Data Docs run), by default the folder's name.

    `reference` is a metadata.parquet to compare statistics against; by default the most recent passing
    batch's under the reports folder.
    """
    batch_dir = Path(batch_dir)
    source_name = source or cfg.data.source
    if source_name not in cfg.sources:
        raise ConfigError(f"source {source_name!r} is not one of sources: {sorted(cfg.sources)}")
    batch_id = batch_id or batch_id_of(batch_dir)
    reports_root = cfg.path(cfg.paths.reports_dir)
    report_dir = Path(report_dir) if report_dir else reports_root / batch_id
    report_dir.mkdir(parents=True, exist_ok=True)
    for stale in (METADATA_PARQUET, GALLERY_HTML):
        (report_dir / stale).unlink(missing_ok=True)
    importer = _prefetch_great_expectations()
    try:
        frame = build_metadata(batch_dir, cfg, source_name)
    except ContractError as exc:
        findings = [{"file": BATCH_FILE, "check": "readable", "severity": "error", "message": str(exc)}]
        result = ValidationResult(
            batch_id,
            batch_dir,
            source_name,
            False,
            EXIT_UNREADABLE,
            findings,
            report_dir,
            summarize(findings, None),
        )
        _write(result)
        return result
    importer.join()
    run = run_suite(frame, build_checks(cfg, source_name), reports_root, run_name=batch_id)
    findings = findings_from(run, frame)
    passed = not any(f["severity"] == "error" for f in findings)
    result = ValidationResult(
        batch_id,
        batch_dir,
        source_name,
        passed,
        EXIT_PASSED if passed else EXIT_FAILED,
        findings,
        report_dir,
        summarize(findings, frame),
        run.data_docs_index,
        run.data_docs_page,
        metadata=frame,
    )
    reference = Path(reference) if reference else find_reference(reports_root, report_dir)
    if reference and reference.is_file():
        result.reference = reference
        result.drift = compare_batches(frame, pd.read_parquet(reference), cfg.validation.drift_z_warn)
    frame.to_parquet(report_dir / METADATA_PARQUET, index=False)
    record_batch(
        reports_root,
        batch_id,
        frame,
        passed=passed,
        reference=result.reference.parent.name if result.reference else None,
        drift=result.drift,
    )
    result.drift_page = write_drift_page(
        reports_root, run.data_docs_index.parent, cfg.validation.drift_z_warn
    )
    result.gallery = write_gallery(
        batch_dir,
        frame,
        findings,
        report_dir / GALLERY_HTML,
        title=f"Batch {batch_id}",
        passed=passed,
        max_pixels=cfg.validation.max_pixels,
        max_file_bytes=cfg.validation.max_file_bytes,
        limit=cfg.validation.gallery_size,
        data_docs_page=run.data_docs_page,
    )
    _write(result)
    log.info(
        "batch %s: %s", batch_id, "passed" if passed else f"failed with {result.summary['errors']} errors"
    )
    return result


def _write(result: ValidationResult) -> None:
    write_json(result.report_dir / FINDINGS_JSON, result.findings)
    write_json(result.report_dir / SUMMARY_JSON, result.to_dict())

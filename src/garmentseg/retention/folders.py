"""Folders the platform may forget: landed batches it holds safely, old quarantine entries, old reports.

A landed folder goes only when every file of it (OS junk aside, it was never delivered) is byte-identical in
the dataset's copy and that copy is in the remote as the current data version's manifest records it; a
folder nobody ingested, or one whose copy differs or is unpushed, stays. Quarantine entries and report
folders go after their `retention.*_days`. Reports that are not per-run folders stay: the GX context and
Data Docs site, the batch statistics history, the stewards' decisions, and the newest passing batch's
report (the next batch's drift reference). Report folders named after a protected data version stay.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from garmentseg.data.contract import os_junk
from garmentseg.retention.plan import Item, Lineage

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

LANDED, QUARANTINE, REPORT = "landed", "quarantine", "report"
KINDS = (LANDED, QUARANTINE, REPORT)
TRAINING_SET_REPORTS = "training-set"  # orchestration.tasks.validate_training_set writes there


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _age_days(folder: Path, now: datetime) -> float:
    """Days since anything in the folder last changed."""
    newest = max((p.stat().st_mtime for p in [folder, *_files(folder)]), default=0.0)
    return (now - datetime.fromtimestamp(newest, UTC)).total_seconds() / 86400


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in _files(folder))


def _children(root: Path) -> list[Path]:
    return (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )


def differs_from_copy(landed: Path, copy: Path) -> str | None:
    """Why `landed` is not wholly in `copy` (a file missing or different there), or None."""
    for path in sorted(_files(landed)):
        if os_junk(path.name):
            continue
        rel = path.relative_to(landed)
        if not (copy / rel).is_file():
            return f"{rel} is not in {copy}"
        if not filecmp.cmp(path, copy / rel, shallow=False):
            return f"{rel} differs from {copy / rel}"
    return None


def _pushed_batches(cfg: Config) -> tuple[dict[str, str], str | None]:
    """(data-dir path -> md5 of the copy, where the current version's manifest records the same), or why none."""
    from garmentseg.data import plane, store, versioning

    version = versioning.data_version(cfg)
    try:
        entries = store.manifest(cfg, version)
        if entries is None:
            return {}, f"data version {version} is not in the remote {store.remote_url(cfg)}"
        paths = {n: p for n, p in plane.dataset_paths(cfg).items() if n in entries and p.exists()}
        held = store.describe(cfg, paths)
    except (store.StoreError, plane.DatasetError) as exc:
        return {}, str(exc)
    return {n: e.md5 for n, e in held.items() if entries[n] == e}, None


def collect_landed(cfg: Config, now: datetime) -> tuple[list[Item], list[str]]:
    from garmentseg.data.index import batch_folder

    days = cfg.retention.landed_days
    aged = [f for f in _children(cfg.path(cfg.paths.landing_dir)) if _age_days(f, now) >= days]
    if not aged:
        return [], []
    pushed, why_none = _pushed_batches(cfg)
    if why_none:
        return [], [f"landed folders kept: {why_none}"]
    items, notes = [], []
    data = cfg.path(cfg.paths.data_dir)
    for folder in aged:
        name = batch_folder(folder.name)
        why = "not in the dataset" if not (data / name).is_dir() else differs_from_copy(folder, data / name)
        if why is None and name not in pushed:
            why = f"{name} is not pushed as the current data version records it"
        if why:
            notes.append(f"landed {folder.name} kept: {why}")
            continue
        age = _age_days(folder, now)
        reason = f"every file byte-identical in {name}, pushed (md5 {pushed[name]}); {age:.0f} days old (>= {days:g})"
        items.append(Item(LANDED, str(folder), reason, _size(folder)))
    return items, notes


def collect_quarantine(cfg: Config, now: datetime) -> list[Item]:
    days = cfg.retention.quarantine_days
    return [
        Item(
            QUARANTINE,
            str(f),
            f"quarantined, unchanged for {_age_days(f, now):.0f} days (>= {days:g})",
            _size(f),
        )
        for f in _children(cfg.path(cfg.paths.quarantine_dir))
        if _age_days(f, now) >= days
    ]


def _report_folders(reports: Path) -> list[Path]:
    """Per-run report folders: batch reports, training-set validations, label audits."""
    from garmentseg.labels.audit import LABELS_DIR
    from garmentseg.validation.suite import DOCS_DIR

    special = {DOCS_DIR, "gx", LABELS_DIR, TRAINING_SET_REPORTS}
    top = [f for f in _children(reports) if f.name not in special]
    return top + _children(reports / TRAINING_SET_REPORTS) + _children(reports / LABELS_DIR)


def collect_reports(cfg: Config, lineage: Lineage, now: datetime) -> list[Item]:
    from garmentseg.validation.report import find_reference

    reports, days = cfg.path(cfg.paths.reports_dir), cfg.retention.reports_days
    reference = find_reference(reports, reports / ".none") if reports.is_dir() else None
    protected = {v.replace(":", "_") for v in lineage.data_versions}
    items = []
    for folder in _report_folders(reports):
        if reference is not None and folder == reference.parent:
            continue
        if any(v in folder.name for v in protected) or _age_days(folder, now) < days:
            continue
        reason = f"report unchanged for {_age_days(folder, now):.0f} days (>= {days:g})"
        items.append(Item(REPORT, str(folder), reason, _size(folder)))
    return items


def collect(cfg: Config, lineage: Lineage, now: datetime) -> tuple[list[Item], list[str]]:
    landed, notes = collect_landed(cfg, now)
    return [*landed, *collect_quarantine(cfg, now), *collect_reports(cfg, lineage, now)], notes


def sweep(items: list[Item]) -> None:
    for item in items:
        shutil.rmtree(item.target)
        log.info("removed %s %s: %s", item.kind, item.target, item.reason)

"""Validate, then hand a passing batch to the dataset or move a failing one, whole, to quarantine.

`route_batch` is the one ingest rule: `garmentseg ingest`, the `garment_ingest` DAG and the demo all act on
its answer. A folder that is not a readable batch at all is left where it landed.

Nothing is lost: the input is never modified, overwritten or deleted except by the atomic rename that
moves it into quarantine (or, across file systems, after every byte of the copy has been verified).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from garmentseg.config import Config
from garmentseg.data.contract import REPORT_DIR_NAME, batch_id_of, batch_id_problem, printable_name
from garmentseg.locks import exclusive
from garmentseg.validation.validate import (
    EXIT_FAILED,
    EXIT_PASSED,
    EXIT_UNREADABLE,
    ValidationResult,
    validate_batch,
)

log = logging.getLogger(__name__)

INGESTED, ALREADY_INGESTED, QUARANTINED, UNREADABLE = (
    "ingested",
    "already_ingested",
    "quarantined",
    "unreadable",
)


class Action(StrEnum):
    """What happens to a validated batch (the values are also the ingest DAG's task ids)."""

    INGEST = "ingest"
    QUARANTINE = "quarantine"
    LEAVE = "leave"


@dataclass(frozen=True)
class Route:
    """The ingest rule's answer for one batch, and why."""

    action: Action
    reason: str
    validated_digest: str | None = None  # `delivery_digest` before validation read it: admit checks it


def route_batch(result: ValidationResult) -> Route:
    """Pass: into the dataset. Fail: to quarantine, whole. Not a readable batch: left where it landed."""
    if result.exit_code == EXIT_UNREADABLE:
        return Route(Action.LEAVE, result.findings[0]["message"])
    if not result.passed:
        errors = sum(1 for f in result.findings if f["severity"] == "error")
        return Route(Action.QUARANTINE, f"batch {result.batch_id} failed validation with {errors} errors")
    return Route(Action.INGEST, f"batch {result.batch_id} passed validation")


def check_batch(
    batch_dir: Path, cfg: Config, source: str | None = None, *, batch_id: str | None = None
) -> tuple[ValidationResult, Route]:
    """Validate a landed batch (report in <reports_dir>/<batch_id>) and route it: ingest's first step. The
    route carries the delivery's digest taken before validation read it, so admitting it later can refuse
    a folder that changed in between."""
    batch_id = batch_id or batch_id_of(Path(batch_dir))
    digest = delivery_digest(Path(batch_dir)) if Path(batch_dir).is_dir() else None
    result = validate_batch(
        batch_dir, cfg, cfg.path(cfg.paths.reports_dir) / batch_id, source=source, batch_id=batch_id
    )
    return result, dataclasses.replace(route_batch(result), validated_digest=digest)


def delivery_digest(batch_dir: Path) -> str:
    """sha256 of what a delivery holds (its contract files' hashes), whatever its folder is called."""
    from garmentseg.data.plane import contract_files, files_digest

    return files_digest(contract_files(Path(batch_dir)))


def quarantined_deliveries(cfg: Config, batch_id: str) -> list[Path]:
    """Every quarantined delivery of a batch id, oldest first: <id>, <id>.2, <id>.3..."""
    root = cfg.path(cfg.paths.quarantine_dir)
    found = [root / batch_id] if (root / batch_id).is_dir() else []
    numbered = [p for p in root.glob(f"{batch_id}.*") if p.is_dir() and p.name[len(batch_id) + 1 :].isdigit()]
    return found + sorted(numbered, key=lambda p: int(p.name[len(batch_id) + 1 :]))


def where_is(cfg: Config, batch_id: str, landed: Path | None = None) -> tuple[str, Path] | None:
    """Where an earlier ingest put the batch: (ingested | quarantined, its folder); None while it waits.
    A `landed` folder under a quarantined id whose content differs from every quarantined delivery (the
    studio's corrected re-delivery) waits too: it is scanned again."""
    ingested = cfg.path(cfg.paths.data_dir) / "batches" / batch_id
    if ingested.exists():
        return INGESTED, ingested
    deliveries = quarantined_deliveries(cfg, batch_id)
    if not deliveries:
        return None
    changed = landed is not None and Path(landed).is_dir()
    if changed and delivery_digest(landed) not in {delivery_digest(d) for d in deliveries}:
        return None
    return QUARANTINED, deliveries[-1]


@dataclass(frozen=True)
class IngestOutcome:
    """Where a batch ended up."""

    status: str  # ingested | already_ingested | quarantined | unreadable
    batch_id: str
    exit_code: int  # 0 ingested or already, 1 quarantined, 2 unreadable
    report_dir: Path | None
    destination: Path | None  # data/batches/<id>, or quarantine/<id>[.<n>]
    message: str
    n_pairs: int | None = None
    data_version: str | None = None
    data_docs_page: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def ingest_batch(
    batch_dir: Path,
    cfg: Config,
    source: str | None = None,
    *,
    batch_id: str | None = None,
    push: bool = True,
) -> IngestOutcome:
    """Validate the batch and act on `route_batch`: ingest, quarantine whole, or leave it where it is (also
    when its folder's name cannot be a batch id, or it is the platform's own ground, such as the dataset:
    nothing is wrong with its content, and a quarantine would move it whole). One ingest at a time on a machine, validation included: the checks against
    the dataset (duplicates, reused ids) must see every batch admitted before."""
    batch_dir = Path(batch_dir)
    batch_id = batch_id or batch_id_of(batch_dir)
    unnameable = batch_id_problem(batch_id)
    if unnameable:
        name = printable_name(batch_id)
        return IngestOutcome(UNREADABLE, name, EXIT_UNREADABLE, None, None, f"{batch_dir}: {unnameable}")
    from garmentseg.data.plane import platform_ground

    if ground := platform_ground(batch_dir, cfg, deliveries=True):
        message = f"{batch_dir}: {ground}; a delivery is a folder of its own, left here untouched"
        return IngestOutcome(UNREADABLE, batch_id, EXIT_UNREADABLE, None, None, message)
    with ingest_lock(cfg):
        return _ingest_unlocked(batch_dir, cfg, source, batch_id, push)


def ingest_lock(cfg: Config) -> AbstractContextManager[None]:
    """The machine's one-ingest-at-a-time lock; a caller that must check something against the dataset or
    the review queue before its ingest and act on it after (review import) holds it around both."""
    return exclusive(cfg.path(cfg.paths.state_dir) / "locks" / "ingest.lock")


def _ingest_unlocked(
    batch_dir: Path, cfg: Config, source: str | None, batch_id: str, push: bool
) -> IngestOutcome:
    earlier = where_is(cfg, batch_id)
    if not batch_dir.exists() and earlier and earlier[0] == QUARANTINED:
        report_dir = cfg.path(cfg.paths.reports_dir) / batch_id
        return IngestOutcome(
            QUARANTINED,
            batch_id,
            EXIT_FAILED,
            _file_report(earlier[1], batch_id, batch_dir, report_dir),  # a kill may have cut it short
            earlier[1],
            f"batch {batch_id} was already quarantined at {earlier[1]}",
        )
    result, route = check_batch(batch_dir, cfg, source, batch_id=batch_id)
    if route.action is Action.LEAVE:
        return IngestOutcome(UNREADABLE, batch_id, EXIT_UNREADABLE, result.report_dir, None, route.reason)
    if route.action is Action.QUARANTINE:
        return quarantine_batch(
            batch_dir, cfg, result.report_dir, batch_id=batch_id, data_docs_page=result.data_docs_page
        )
    return admit_batch(
        batch_dir,
        cfg,
        batch_id=batch_id,
        report_dir=result.report_dir,
        push=push,
        data_docs_page=result.data_docs_page,
        validated_digest=route.validated_digest,
    )


def admit_batch(
    batch_dir: Path,
    cfg: Config,
    *,
    batch_id: str | None = None,
    report_dir: Path | None = None,
    push: bool = True,
    data_docs_page: Path | None = None,
    validated_digest: str | None = None,
) -> IngestOutcome:
    """Hand a validated batch to the dataset (copied atomically, indexed, versioned; input untouched),
    refused when its files changed since validation (`Route.validated_digest`)."""
    from garmentseg.data.plane import add_batch

    added = add_batch(Path(batch_dir), cfg, batch_id=batch_id, push=push, validated_digest=validated_digest)
    status = ALREADY_INGESTED if added.already_present else INGESTED
    log.info("batch %s: %s (%d pairs) at %s", added.batch_id, status, added.n_pairs, added.dataset_path)
    return IngestOutcome(
        status,
        added.batch_id,
        EXIT_PASSED,
        report_dir,
        Path(added.dataset_path),
        f"batch {added.batch_id} {status.replace('_', ' ')}: {added.n_pairs} pairs, data version "
        f"{added.data_version}",
        n_pairs=added.n_pairs,
        data_version=added.data_version,
        data_docs_page=data_docs_page,
    )


def quarantine_batch(
    batch_dir: Path,
    cfg: Config,
    report_dir: Path | None,
    *,
    batch_id: str | None = None,
    data_docs_page: Path | None = None,
) -> IngestOutcome:
    """Move the whole batch to <quarantine_dir>/<batch_id>/ (never over an earlier one) with its report."""
    batch_dir = Path(batch_dir)
    if not batch_dir.is_dir():
        raise FileNotFoundError(f"{batch_dir}: batch folder to quarantine does not exist")
    batch_id = batch_id or batch_id_of(batch_dir)
    destination = _move_into_quarantine(batch_dir, cfg.path(cfg.paths.quarantine_dir), batch_id)
    log.info("batch %s: moved to %s", batch_id, destination)
    report_copy = _file_report(destination, batch_id, batch_dir, report_dir, data_docs_page)
    log.warning("batch %s quarantined at %s", batch_id, destination)
    return IngestOutcome(
        QUARANTINED,
        batch_id,
        EXIT_FAILED,
        report_copy,
        destination,
        f"batch {batch_id} failed validation; moved whole to {destination}",
        data_docs_page=data_docs_page,
    )


def _file_report(
    destination: Path,
    batch_id: str,
    batch_dir: Path,
    report_dir: Path | None,
    data_docs_page: Path | None = None,
) -> Path:
    """Copy the validation report beside the quarantined batch; README.txt, written last, marks it whole,
    so a retry after a kill between the move and the README completes it."""
    report_copy = destination / REPORT_DIR_NAME
    readme = report_copy / "README.txt"
    if readme.is_file():
        return report_copy
    if report_dir and Path(report_dir).is_dir():
        shutil.copytree(report_dir, report_copy, dirs_exist_ok=True)
    report_copy.mkdir(exist_ok=True)
    tmp = readme.with_name(readme.name + ".tmp")
    tmp.write_text(
        f"Batch {batch_id} failed validation and was moved here whole from {batch_dir.resolve()}.\n"
        f"findings.json: one finding per problem; gallery.html: the failing pairs.\n"
        f"Data Docs: {data_docs_page or 'data_docs_page in summary.json'}\n"
        f"Report at validation time: {report_dir}\n"
    )
    tmp.replace(readme)
    return report_copy


def _move_into_quarantine(source: Path, root: Path, batch_id: str) -> Path:
    """Rename the batch onto <root>/<id>, or <id>.2, <id>.3... when earlier deliveries are there. No folder is
    reserved ahead of the move, so a kill leaves the batch either where it landed or whole in quarantine.
    Across file systems: copy into a hidden staging folder under root, verify every byte, rename it into
    place, then delete the source."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _rename_to_free_slot(source, root, batch_id)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    for stale in root.glob(f".{batch_id}.staging-*"):  # a killed copy's: quarantines go one at a time
        log.warning("removing %s, left by an interrupted quarantine", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{batch_id}.staging-"))
    shutil.copytree(source, staging, dirs_exist_ok=True, copy_function=shutil.copy2)
    if tree_digest(source) != tree_digest(staging):
        raise OSError(f"{staging}: copy of {source} does not match byte for byte; source kept")
    destination = _rename_to_free_slot(staging, root, batch_id)
    try:
        shutil.rmtree(source)
    except OSError as exc:  # a read-only landing share: every byte is in quarantine; the delivery stays
        log.warning(
            "%s: quarantined whole at %s, but not removed (%s); remove it by hand", source, destination, exc
        )
    return destination


def _rename_to_free_slot(source: Path, root: Path, batch_id: str) -> Path:
    """rename(2) fails on a non-empty target, so two quarantines of one id can never land in one folder."""
    for n in range(1, 10_000):
        candidate = root / (batch_id if n == 1 else f"{batch_id}.{n}")
        try:
            os.rename(source, candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
    raise RuntimeError(f"{root}: no free quarantine folder for batch {batch_id}")


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under folder."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                out[path.relative_to(folder).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return out

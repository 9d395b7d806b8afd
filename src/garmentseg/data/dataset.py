"""Adding a validated batch to the DVC-tracked dataset: copy, index, version, all or nothing.

    data/batches/<batch_id>/      the batch, copied (the input folder is never touched), immutable
    data/batches/<batch_id>.dvc   its DVC record (`dvc add`)
    data/index.parquet            rebuilt with the batch; existing garments keep their split;
                                  recorded by `dvc commit index` (the pipeline stage) or `dvc add`

The copy is staged next to its destination (same filesystem), checked against the source's SHA-256s, and
renamed into place; any failure afterwards removes it and restores the index and DVC's files, so a batch is
either fully in the dataset or not at all. Adding the same batch again is a no-op.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from garmentseg.config import Config
from garmentseg.data import versioning
from garmentseg.data.contract import CUTOUT_DIR, GARMENTS_CSV, RAW_DIR, batch_id_of, discover_pairs
from garmentseg.data.index import BATCHES_DIR, INDEX_FILE, read_index, reindex

log = logging.getLogger(__name__)

_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DatasetError(RuntimeError):
    """A batch cannot be added; the message names the batch and the reason."""


@dataclass(frozen=True)
class AddBatchResult:
    batch_id: str
    dataset_path: Path
    n_pairs: int
    data_version: str
    already_present: bool


def _contract_files(batch_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of what the contract consists of (raw/, cutouts/, garments.csv)."""
    files = {}
    for side in (RAW_DIR, CUTOUT_DIR):
        for path in sorted((batch_dir / side).glob("*")):
            files[f"{side}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = batch_dir / GARMENTS_CSV
    if meta.is_file():
        files[GARMENTS_CSV] = hashlib.sha256(meta.read_bytes()).hexdigest()
    return files


def _check_batch(batch_dir: Path, batch_id: str) -> int:
    if not _BATCH_ID.match(batch_id):
        raise DatasetError(f"{batch_dir}: batch id {batch_id!r} must match {_BATCH_ID.pattern}")
    pairs, problems = discover_pairs(batch_dir)
    incomplete = [p.raw or p.cutout for p in pairs if p.raw is None or p.cutout is None]
    reasons = [f"{rel}: {why}" for rel, why in problems] + [f"{rel}: no partner" for rel in incomplete]
    if reasons:
        raise DatasetError(f"{batch_dir}: not a clean batch ({'; '.join(reasons[:5])})")
    if not pairs:
        raise DatasetError(f"{batch_dir}: no shot/cutout pairs")
    return len(pairs)


@contextmanager
def _exclusive(cfg: Config) -> Iterator[None]:
    """One dataset writer at a time on this machine."""
    lock = cfg.path(cfg.paths.state_dir) / "locks" / "dataset.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Snapshot:
    """Small files' bytes (or absence), to put back on rollback."""

    def __init__(self, paths: list[Path]):
        self.saved = {p: (p.read_bytes() if p.is_file() else None) for p in paths}

    def restore(self) -> None:
        for path, data in self.saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)


def add_batch(
    batch_dir: Path, cfg: Config, *, batch_id: str | None = None, push: bool = False
) -> AddBatchResult:
    """Copy a batch into data/batches/<batch_id>/, re-index, record with DVC (and push); all or nothing."""
    source = Path(batch_dir).resolve()
    batch_id = batch_id or batch_id_of(source)
    n_pairs = _check_batch(source, batch_id)
    data = cfg.path(cfg.paths.data_dir)
    batches = data / BATCHES_DIR
    dest = batches / batch_id
    index_path = data / INDEX_FILE
    with _exclusive(cfg):
        files = _contract_files(source)
        present = dest.exists()
        if present:
            if _contract_files(dest) != files:
                raise DatasetError(
                    f"{dest}: batch {batch_id} is already in the dataset with other content; "
                    "batches are immutable, give the new one another id"
                )
            if index_path.is_file() and (read_index(index_path)["batch_id"] == batch_id).any():
                log.info("batch %s is already in the dataset", batch_id)
                return AddBatchResult(batch_id, dest, n_pairs, versioning.data_version(cfg), True)
        batches.mkdir(parents=True, exist_ok=True)
        snapshot = _Snapshot(
            [
                index_path,
                cfg.root / "dvc.lock",
                batches / ".gitignore",
                batches / f"{batch_id}.dvc",
                data / ".gitignore",
                data / f"{INDEX_FILE}.dvc",
            ]
        )
        created = False
        staging: Path | None = None
        try:
            if not present:
                staging = Path(tempfile.mkdtemp(prefix=f".{batch_id}.", suffix=".staging", dir=batches))
                for rel in files:
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / rel, staging / rel)
                copied = _contract_files(staging)
                if copied != files:
                    bad = sorted(k for k in files if copied.get(k) != files[k])
                    raise DatasetError(f"{source}: copy differs from the source for {bad[:5]}")
                staging.rename(dest)
                created = True
            reindex(data, cfg)
            versioning.add([dest.relative_to(cfg.root)], cfg.root)
            versioning.record_index(cfg)
            if push:
                versioning.push(cfg.root)
        except BaseException:
            log.error("adding batch %s failed; rolling back", batch_id)
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            snapshot.restore()
            raise
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    version = versioning.data_version(cfg)
    log.info("batch %s added: %d pairs, data version %s", batch_id, n_pairs, version)
    return AddBatchResult(batch_id, dest, n_pairs, version, False)

"""The data plane: add a batch, publish the dataset to the remote, check a data version out anywhere, and
name the version a tree holds. Every caller (CLI, ingest, DAG tasks, training's lineage) comes here.

    data/batches/<batch_id>/      a batch, copied (the input folder is never touched), immutable
    data/batches/<batch_id>.dvc   its DVC pointer
    data/index.parquet            the index: existing garments keep their split
    <remote>/garmentseg/versions/<data_version>.json
                                  the manifest: every path of that version with DVC's hash (see `store`)

A data version is published when its objects and its manifest are in the remote; from then on
`checkout(cfg, version)` rebuilds it byte for byte on any machine that reaches the remote, with no git
commit of pointers needed.

Adding a batch is a journal of idempotent steps under one lock: copy (staged beside its destination,
verified, renamed into place), index, track (objects in the cache, pointers, the pipeline's index stage),
push (objects, then the manifest). An exception rolls every step back. A kill cannot, so each step is
written to be redone: the retry finds what is missing (a batch copied but not indexed, indexed but not
tracked, tracked but not pushed) and completes it, and removes staging folders a killed copy left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from garmentseg.config import Config
from garmentseg.data import store, versioning
from garmentseg.data.contract import (
    CUTOUT_DIR,
    GARMENTS_CSV,
    RAW_DIR,
    batch_id_of,
    batch_id_problem,
    discover_pairs,
    os_junk,
)
from garmentseg.data.index import (
    BATCHES_DIR,
    INDEX_FILE,
    batch_folder,
    dataset_folders,
    read_index,
    reindex,
    write_ingest_record,
)
from garmentseg.locks import exclusive

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".staging"


class DatasetError(RuntimeError):
    """The dataset cannot do what was asked; the message names the batch, version or path and the reason."""


@dataclass(frozen=True)
class AddBatchResult:
    batch_id: str
    dataset_path: Path
    n_pairs: int
    data_version: str
    already_present: bool


@dataclass(frozen=True)
class Publication:
    data_version: str
    entries: dict[str, store.Entry]
    pushed: bool
    changed: bool  # anything written: a pointer, dvc.lock, an object or the manifest


@dataclass(frozen=True)
class CheckoutResult:
    data_version: str
    entries: dict[str, store.Entry]
    seconds: float


# ------------------------------------------------------------------------------------------- naming
def dataset_paths(cfg: Config, frame: pd.DataFrame | None = None) -> dict[str, Path]:
    """Every path of the dataset (data-dir-relative name -> path): the index and each folder it lists."""
    data = cfg.path(cfg.paths.data_dir)
    index_path = data / INDEX_FILE
    if frame is None:
        if not index_path.is_file():
            raise DatasetError(f"{index_path}: no index, so no dataset to name")
        frame = read_index(index_path)
    folders = sorted({batch_folder(b) for b in frame["batch_id"].unique()})
    return {INDEX_FILE: index_path, **{name: data / name for name in folders}}


def _pointer_mismatches(paths: dict[str, Path], entries: dict[str, store.Entry]) -> list[str]:
    """Batches whose .dvc pointer does not record the entry the data has."""
    stale = []
    for name, path in paths.items():
        if name.startswith(f"{BATCHES_DIR}/"):
            pointer = path.with_name(f"{path.name}.dvc")
            recorded = yaml.safe_load(pointer.read_text()) if pointer.is_file() else None
            if recorded != entries[name].pointer(path.name):
                stale.append(f"{name}.dvc")
    return stale


def data_state(cfg: Config) -> tuple[str, dict[str, store.Entry]]:
    """("clean" | "dirty: why" | "unverified: why" | "empty", entries): the tree against the manifest of
    its data version in the remote."""
    version = versioning.data_version(cfg)
    if version == "empty":
        return "empty", {}
    paths = {name: path for name, path in dataset_paths(cfg).items() if path.exists()}  # missing: differs
    try:
        current = store.describe(cfg, paths)
        recorded = store.manifest(cfg, version)
    except store.StoreError as exc:
        return f"unverified: {exc}", {}
    if recorded is None:
        return f"dirty: data version {version} is not in the remote {store.remote_url(cfg)}", current
    differs = sorted(k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k))
    differs += _pointer_mismatches(paths, current)
    if differs:
        return f"dirty: {', '.join(differs[:5])} differ from the manifest of {version}", current
    return "clean", current


def lineage(cfg: Config, frame: pd.DataFrame | None = None) -> dict[str, str]:
    """The tags every run and model version carries: git commit, data version, its state, DVC's hashes.
    A frame (a folder given instead of the configured dataset) is named by its content alone."""
    tags = {"git_commit": versioning.git_commit(cfg.root)}
    if frame is not None:
        return {**tags, "data_version": versioning.data_version(cfg, frame), "data_state": "folder"}
    state, entries = data_state(cfg)
    tags.update(data_version=versioning.data_version(cfg), data_state=state[:500])
    return {**tags, **{f"data_md5.{name}": entry.md5 for name, entry in entries.items()}}


def version_info(cfg: Config) -> dict[str, object]:
    """What `garmentseg data version` shows: the data version, its state, the commit, DVC's hashes."""
    state, entries = data_state(cfg)
    return {
        "data_version": versioning.data_version(cfg),
        "data_state": state,
        "git_commit": versioning.git_commit(cfg.root, short=True),
        "remote": store.remote_url(cfg),
        "dvc": {(Path(cfg.paths.data_dir) / name).as_posix(): e.md5 for name, e in entries.items()},
    }


# --------------------------------------------------------------------------------------- publishing
def _index_stage(cfg: Config) -> str | None:
    """The dvc.yaml stage whose output is the index, when this tree holds all its inputs (a fresh clone
    has no pipeline outputs; its index travels by the manifest alone)."""
    pipeline = cfg.root / "dvc.yaml"
    if not pipeline.is_file():
        return None
    target = (cfg.path(cfg.paths.data_dir) / INDEX_FILE).relative_to(cfg.root).as_posix()
    for name, stage in ((yaml.safe_load(pipeline.read_text()) or {}).get("stages") or {}).items():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        if target in outs:
            missing = [d for d in stage.get("deps", []) if not (cfg.root / d).exists()]
            if missing:
                log.info("dvc.yaml stage %s is not recorded: this tree lacks its inputs %s", name, missing)
                return None
            return name
    return None


def publish(cfg: Config, *, push: bool = True) -> Publication:
    """Track the dataset (objects in the cache, batch pointers, the pipeline's index stage) and, with push,
    upload its objects and its manifest. Idempotent: `changed` says whether anything was written."""
    paths = dataset_paths(cfg)
    version = versioning.data_version(cfg)
    entries = store.commit(cfg, paths)
    changed = False
    for name, path in paths.items():
        if name.startswith(f"{BATCHES_DIR}/"):
            changed |= store.write_pointer(path, entries[name])
    if stage := _index_stage(cfg):
        changed |= store.record_stage(cfg, stage)
    log.info("data version %s tracked: %d paths", version, len(entries))
    if push:
        changed |= store.push(cfg, version, entries)
        log.info("data version %s pushed to %s", version, store.remote_url(cfg))
    return Publication(version, entries, push, changed)


# ------------------------------------------------------------------------------------- adding batches
@contextmanager
def dataset_lock(cfg: Config) -> Iterator[None]:
    """One dataset writer at a time on this machine: `add_batch` writes under it, retention holds it while
    it deletes DVC objects."""
    with exclusive(cfg.path(cfg.paths.state_dir) / "locks" / "dataset.lock"):
        yield


def contract_files(batch_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of what the contract consists of (raw/, cutouts/, garments.csv): the files
    in them, not a .DS_Store beside the shots, a stray folder or a dangling link (validation names those)."""
    files = {}
    for side in (RAW_DIR, CUTOUT_DIR):
        for path in sorted((batch_dir / side).glob("*")):
            if path.is_file() and not os_junk(path.name):
                files[f"{side}/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = batch_dir / GARMENTS_CSV
    if meta.is_file():
        files[GARMENTS_CSV] = hashlib.sha256(meta.read_bytes()).hexdigest()
    return files


def platform_ground(path: Path, cfg: Config, *, deliveries: bool) -> str | None:
    """Why `path` is the platform's own ground, or None: the data dir or inside it, a folder holding the data
    dir or the state dir (a project root, a home folder), or inside the reports, the review storage, the
    new shots and their cutouts. With `deliveries` False (a folder written for people, such as a review
    export) the landing and the quarantine count too; an ingest takes its deliveries from there."""
    p = cfg.paths
    inside = {
        "the dataset": p.data_dir,
        "the validation reports": p.reports_dir,
        "the review storage": cfg.review.storage_dir,
        "the new shots to cut out": p.deliveries_dir,
        "the weekly cutouts": p.cutouts_dir,
    }
    if not deliveries:
        inside |= {"the landing folder": p.landing_dir, "the quarantine": p.quarantine_dir}
    target = Path(path).resolve()
    for what, folder in inside.items():
        if target.is_relative_to(cfg.path(folder).resolve()):
            return f"inside {what} ({cfg.path(folder)})"
    for what, folder in {"the dataset": p.data_dir, "the platform's state": p.state_dir}.items():
        if cfg.path(folder).resolve().is_relative_to(target):
            return f"holds {what} ({cfg.path(folder)})"
    return None


def files_digest(files: dict[str, str]) -> str:
    """One sha256 for a delivery's `contract_files`: what it holds, whatever its folder is called."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _check_batch(batch_dir: Path, batch_id: str) -> int:
    problem = batch_id_problem(batch_id)
    if problem:
        raise DatasetError(f"{batch_dir}: {problem}")
    pairs, problems = discover_pairs(batch_dir)
    incomplete = [p.raw or p.cutout for p in pairs if p.raw is None or p.cutout is None]
    reasons = [f"{rel}: {why}" for rel, why in problems] + [f"{rel}: no partner" for rel in incomplete]
    if reasons:
        raise DatasetError(f"{batch_dir}: not a clean batch ({'; '.join(reasons[:5])})")
    if not pairs:
        raise DatasetError(f"{batch_dir}: no shot/cutout pairs")
    return len(pairs)


def _copy_in(source: Path, dest: Path, files: dict[str, str]) -> None:
    """Copy the contract files to a staging folder beside dest, verify every byte, record the time of
    ingest (which delivery of a view is the latest), rename into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=STAGING_SUFFIX, dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the batch from the other users of a shared node
    try:
        for rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / rel, staging / rel)
        copied = contract_files(staging)
        if copied != files:
            bad = sorted(k for k in files if copied.get(k) != files[k])
            raise DatasetError(f"{source}: copy differs from the source for {bad[:5]}")
        write_ingest_record(staging, datetime.now(UTC).isoformat(timespec="microseconds"))
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    batch_dir: Path,
    cfg: Config,
    *,
    batch_id: str | None = None,
    push: bool = True,
    validated_digest: str | None = None,
) -> AddBatchResult:
    """Copy a batch into data/batches/<batch_id>/, index, track and push it; all or nothing on an error,
    completed by the retry after a kill. `already_present` when there was nothing left to do. With
    `validated_digest` (`files_digest` of the folder as validation read it), a folder changed since then
    (a studio still uploading into it) is refused: only validated bytes enter."""
    source = Path(batch_dir).resolve()
    batch_id = batch_id or batch_id_of(source)
    n_pairs = _check_batch(source, batch_id)
    data = cfg.path(cfg.paths.data_dir)
    batches, index_path = data / BATCHES_DIR, data / INDEX_FILE
    dest = batches / batch_id
    with dataset_lock(cfg):
        batches.mkdir(parents=True, exist_ok=True)
        for stale in batches.glob(f".*{STAGING_SUFFIX}"):  # left by a killed copy: we hold the lock
            log.warning("removing %s, left by an interrupted add", stale)
            shutil.rmtree(stale, ignore_errors=True)
        files = contract_files(source)
        if validated_digest is not None and files_digest(files) != validated_digest:
            raise DatasetError(
                f"{source}: its files changed after validation read them (still being delivered?); nothing "
                "ingested: ingest it again once the delivery is complete"
            )
        present = dest.exists()
        other_content = present and contract_files(dest) != files
        if other_content and not (batches / f"{batch_id}.dvc").exists():
            # copied by an add killed before it was tracked: in no data version, so no history to keep
            log.warning("removing %s, left untracked by an interrupted add of other content", dest)
            shutil.rmtree(dest)
            present = other_content = False
        if other_content:
            raise DatasetError(
                f"{dest}: batch {batch_id} is already in the dataset with other content; "
                "batches are immutable, give the new one another id"
            )
        indexed = index_path.is_file() and bool((read_index(index_path)["batch_id"] == batch_id).any())
        pointers = [batches / f"{batch_id}.dvc", *batches.glob("*.dvc")]
        snapshot = _Snapshot([index_path, cfg.root / "dvc.lock", batches / ".gitignore", *pointers])
        try:
            if not present:
                _copy_in(source, dest, files)
                log.info("batch %s: copied to %s", batch_id, dest)
            if not indexed:
                reindex(data, cfg)
                log.info("batch %s: indexed", batch_id)
            published = publish(cfg, push=push)
        except BaseException:
            log.error("adding batch %s failed; rolling back", batch_id)
            if not present:
                shutil.rmtree(dest, ignore_errors=True)
            snapshot.restore()
            raise
    already = present and indexed and not published.changed
    log.info(
        "batch %s %s: %d pairs, data version %s",
        batch_id,
        "already present" if already else "added",
        n_pairs,
        published.data_version,
    )
    return AddBatchResult(batch_id, dest, n_pairs, published.data_version, already)


# --------------------------------------------------------------------------------------- checking out
def _verify(cfg: Config, version: str, entries: dict[str, store.Entry], paths: dict[str, Path]) -> None:
    """The tree is the version: the index's content names it, DVC's hashes match, every file's SHA-256
    matches the index."""
    index_path = paths[INDEX_FILE]
    found = versioning.index_version(index_path)
    if found != version:
        raise DatasetError(f"{index_path}: checked out as data version {version} but its content is {found}")
    current = store.describe(cfg, paths)
    if differs := sorted(k for k in entries if current[k] != entries[k]):
        raise DatasetError(f"data version {version}: {differs[:5]} differ from the manifest after checkout")
    data = index_path.parent
    for row in read_index(index_path).itertuples():
        for rel, expected in ((row.raw_path, row.raw_sha256), (row.cutout_path, row.cutout_sha256)):
            if hashlib.sha256((data / rel).read_bytes()).hexdigest() != expected:
                raise DatasetError(f"{data / rel}: SHA-256 differs from the index of data version {version}")


def checkout(cfg: Config, version: str) -> CheckoutResult:
    """Make the data dir hold data version VERSION from the remote: every path its manifest lists,
    byte for byte, hashes verified, batch pointers written. Folders outside the version are left alone."""
    started = time.monotonic()
    if not versioning.is_data_version(version):
        raise DatasetError(
            f"{version!r} is not a data version ({versioning.VERSION_DIGITS} hex digits, as `garmentseg data "
            "version` prints them)"
        )
    with dataset_lock(cfg):
        entries = store.manifest(cfg, version)
        if entries is None:
            raise DatasetError(f"data version {version} is not in the DVC remote {store.remote_url(cfg)}")
        data = cfg.path(cfg.paths.data_dir)
        paths = {name: data / name for name in entries}
        for path in paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        store.fetch_and_checkout(cfg, entries, paths)
        for name, path in paths.items():
            if name.startswith(f"{BATCHES_DIR}/"):
                store.write_pointer(path, entries[name])
        _verify(cfg, version, entries, paths)
    extra = sorted({batch_folder(b) for b, _ in dataset_folders(data)} - set(entries))
    if extra:
        log.warning("data version %s: %s are in the tree but not in the version", version, extra)
    seconds = time.monotonic() - started
    log.info("data version %s checked out: %d paths in %.1fs", version, len(entries), seconds)
    return CheckoutResult(version, entries, seconds)


def pull(cfg: Config) -> CheckoutResult:
    """Complete the tree from the remote: check out the data version its index names (a worker that has
    the index, or the pointers' data, gets every path of that version)."""
    version = versioning.data_version(cfg)
    if version == "empty":
        raise DatasetError(
            f"{cfg.path(cfg.paths.data_dir) / INDEX_FILE}: no index to pull for; "
            "use `garmentseg data checkout DATA_VERSION`"
        )
    return checkout(cfg, version)


def materialise(cfg: Config, version: str) -> bool:
    """Make this tree hold data version VERSION, checking it out from the remote when it does not (a worker
    on another machine, a fresh pod); True when it had to."""
    index = cfg.path(cfg.paths.data_dir) / INDEX_FILE
    held = index.is_file() and versioning.data_version(cfg) == version
    if (
        held
        and all(path.exists() for path in dataset_paths(cfg).values())
        and _every_pair_present(cfg, index)
    ):
        return False
    checkout(cfg, version)
    return True


def _every_pair_present(cfg: Config, index: Path) -> bool:
    """Whether every file the index names is on disk: a checkout killed midway leaves batch folders that
    exist with some of their files, and training would fail on the first missing one, retry after retry."""
    data = cfg.path(cfg.paths.data_dir)
    frame = read_index(index)
    return all((data / rel).is_file() for rel in (*frame["raw_path"], *frame["cutout_path"]))

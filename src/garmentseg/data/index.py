"""The dataset index (one row per shot/cutout pair) and the garment-level split rule.

A garment's split is a pure function of its id and `data.splits` (seed and fractions): every view of a
garment lands in the same split, the same garment gets the same split on every machine, and adding a batch
cannot move a garment. Because the rule ignores the view, every split holds the views in the proportions
the batches deliver them (stratified by view). `build_index(previous=...)` also keeps the split a garment
already has, so a garment stays put even if the split parameters are later changed.

`load_dataset(cfg, path=None)` is how every step (prepare, train, evaluate, gate, the DAGs) reads a
dataset: the configured data dir by default, or any data dir, index file or contract folder given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from garmentseg.config import Config, SplitConfig
from garmentseg.data.contract import (
    GARMENTS_CSV,
    ContractError,
    batch_id_of,
    discover_pairs,
    read_garments_csv,
)
from garmentseg.imageio import ImageError, read_header

log = logging.getLogger(__name__)

# Written into each ingested batch's folder (a dot-file, so no part of the contract): when the batch entered
# the dataset. The latest delivery of a garment's view is the active one, and the record travels with the
# batch in every data version, so a fresh reindex on another machine picks the same rows.
INGEST_RECORD = ".ingest.json"

INDEX_COLUMNS = [
    "garment_id",
    "view",
    "raw_path",
    "cutout_path",
    "raw_sha256",
    "cutout_sha256",
    "width",
    "height",
    "split",
    "garment_type",
    "difficulty",
    "batch_id",
]
INDEX_FILE = "index.parquet"
SPLITS = ("train", "valid", "test")
# The columns that decide the prepared tensors (index_hash): the pairs, their bytes and their split.
HASH_COLUMNS = ("garment_id", "view", "raw_path", "cutout_path", "raw_sha256", "cutout_sha256", "split")
SYNTH_DIR = "synth"
BATCHES_DIR = "batches"


class DatasetIndexError(ValueError):
    """The dataset cannot be indexed as it stands; the message names the file and the rule."""


def assign_split(garment_id: str, splits: SplitConfig) -> str:
    """train | valid | test from a hash of the split seed and the garment id (never the view)."""
    digest = hashlib.sha256(f"{splits.seed}:{garment_id.lower()}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < splits.train:
        return "train"
    if u < splits.train + splits.valid:
        return "valid"
    return "test"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _garment_meta(batch_dir: Path) -> dict[str, tuple[str, str]]:
    path = batch_dir / GARMENTS_CSV
    if not path.exists():
        return {}
    try:
        return read_garments_csv(path)
    except ContractError as exc:
        raise DatasetIndexError(str(exc)) from None


def index_folder(batch_dir: Path, cfg: Config, batch_id: str | None = None) -> pd.DataFrame:
    """Index one contract folder; paths relative to it. Incomplete pairs are logged and left out."""
    batch_dir = Path(batch_dir)
    batch_id = batch_id or batch_id_of(batch_dir)
    pairs, problems = discover_pairs(batch_dir)
    for rel, reason in problems:
        log.warning("%s: %s (not indexed)", batch_dir / rel, reason)
    meta = _garment_meta(batch_dir)
    rows = []
    for pair in tqdm(pairs, desc=f"index {batch_id}", unit="pair", disable=None, leave=False):
        if pair.raw is None or pair.cutout is None:
            log.warning("%s: %s has no partner (not indexed)", batch_dir, pair.raw or pair.cutout)
            continue
        raw = (batch_dir / pair.raw).read_bytes()
        cutout = (batch_dir / pair.cutout).read_bytes()
        try:
            header = read_header(raw)
        except ImageError as exc:
            raise DatasetIndexError(f"{batch_dir / pair.raw}: {exc}") from None
        garment_type, difficulty = meta.get(pair.key.garment_id, ("unknown", "unknown"))
        rows.append(
            {
                "garment_id": pair.key.garment_id,
                "view": pair.key.view,
                "raw_path": pair.raw,
                "cutout_path": pair.cutout,
                "raw_sha256": _sha256(raw),
                "cutout_sha256": _sha256(cutout),
                "width": header.width,
                "height": header.height,
                "split": assign_split(pair.key.garment_id, cfg.data.splits),
                "garment_type": garment_type,
                "difficulty": difficulty,
                "batch_id": batch_id,
            }
        )
    return _frame(rows)


def _frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    df = df.astype({c: "int64" for c in ("width", "height")})
    return df.sort_values(["batch_id", "garment_id", "view"], kind="stable").reset_index(drop=True)


def dataset_folders(data_dir: Path) -> list[tuple[str, Path]]:
    """(batch_id, folder) of every synthetic base dataset and ingested batch under the data dir."""
    found = []
    for group in (SYNTH_DIR, BATCHES_DIR):
        root = Path(data_dir) / group
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                found.append((f"{SYNTH_DIR}/{folder.name}" if group == SYNTH_DIR else folder.name, folder))
    return found


def batch_folder(batch_id: str) -> str:
    """The data-dir-relative folder of a batch id, as `dataset_folders` names them."""
    return batch_id if batch_id.startswith(f"{SYNTH_DIR}/") else f"{BATCHES_DIR}/{batch_id}"


def write_ingest_record(folder: Path, ingested_at: str) -> None:
    """Record in a batch's folder when it entered the dataset (an ISO-8601 UTC time)."""
    (Path(folder) / INGEST_RECORD).write_text(json.dumps({"ingested_at": ingested_at}) + "\n")


def ingest_time(folder: Path) -> str | None:
    """When the batch in `folder` entered the dataset; None for a synthetic base dataset, or a batch
    ingested before the record existed."""
    record = Path(folder) / INGEST_RECORD
    if not record.is_file():
        return None
    try:
        return str(json.loads(record.read_text())["ingested_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetIndexError(f"{record}: unreadable ingest record ({exc})") from None


def build_index(data_dir: Path, cfg: Config, previous: pd.DataFrame | None = None) -> pd.DataFrame:
    """Index data_dir/synth/* and data_dir/batches/*; paths relative to data_dir; known garments keep
    the split `previous` gave them."""
    data_dir = Path(data_dir)
    frames, ingested = [], {}
    for batch_id, folder in dataset_folders(data_dir):
        df = index_folder(folder, cfg, batch_id=batch_id)
        prefix = folder.relative_to(data_dir).as_posix() + "/"
        df["raw_path"] = prefix + df["raw_path"]
        df["cutout_path"] = prefix + df["cutout_path"]
        frames.append(df)
        ingested[batch_id] = ingest_time(folder)
    df = _supersede(_frame(pd.concat(frames, ignore_index=True) if frames else []), ingested, previous)
    if previous is not None and len(previous):
        kept = previous.groupby("garment_id")["split"].first().to_dict()
        known = df["garment_id"].isin(kept)
        df.loc[known, "split"] = df.loc[known, "garment_id"].map(kept)
    problems = check_index(df)
    if problems:
        raise DatasetIndexError(f"{data_dir}: " + "; ".join(problems))
    return df


def _supersede(
    df: pd.DataFrame, ingested: dict[str, str | None], previous: pd.DataFrame | None
) -> pd.DataFrame:
    """One active row per garment and view: the pair delivered last (a retoucher's correction) replaces
    the earlier ones, which stay in the tree and in earlier data versions. "Last" is the batches' ingest
    records (`ingested`, batch id -> time). Batches without one (synthetic bases, batches ingested before
    the record) rank below those with one; among them a batch the previous index did not know wins, then
    the last batch id."""
    key = ["garment_id", "view"]
    repeated = df.duplicated(key, keep=False)
    if not repeated.any():
        return df
    known = set(previous["batch_id"]) if previous is not None else set()
    rank = df["batch_id"].map(
        lambda b: (ingested.get(b) is not None, ingested.get(b) or "", b not in known, b)
    )
    order = sorted(range(len(df)), key=lambda i: rank.iloc[i])
    kept = df.iloc[order].drop_duplicates(key, keep="last")
    for row in df[repeated & ~df.index.isin(kept.index)].itertuples():
        winner = kept[(kept["garment_id"] == row.garment_id) & (kept["view"] == row.view)].iloc[0]
        log.info(
            "%s %s: batch %s supersedes batch %s", row.garment_id, row.view, winner["batch_id"], row.batch_id
        )
    return _frame(kept)


def check_index(df: pd.DataFrame) -> list[str]:
    """Integrity rules of an index: columns, one row per garment view, one split per garment."""
    problems = []
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        return [f"missing columns {missing}"]
    dup = df[df.duplicated(["garment_id", "view"], keep=False)]
    for (garment, view), group in dup.groupby(["garment_id", "view"]):
        problems.append(f"{garment} {view} appears more than once: {', '.join(group['raw_path'])}")
    splits = df.groupby("garment_id")["split"].nunique()
    for garment in splits[splits > 1].index:
        problems.append(f"garment {garment} is in several splits")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        problems.append(f"unknown split values {bad} (expected {', '.join(SPLITS)})")
    return problems


def index_hash(frame: pd.DataFrame) -> str:
    """sha256 of the index content that decides the tensors (order-independent)."""
    cols = [c for c in HASH_COLUMNS if c in frame.columns]
    table = frame[cols].astype(str).sort_values(cols).to_csv(index=False)
    return hashlib.sha256(table.encode()).hexdigest()


def write_index(df: pd.DataFrame, path: Path) -> Path:
    """Write the index atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    _frame(df[INDEX_COLUMNS]).to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
    tmp.replace(path)
    return path


def reindex(data_dir: Path, cfg: Config, *, fresh: bool = False) -> pd.DataFrame:
    """Rebuild data_dir/index.parquet; garments already in it keep their split unless `fresh`."""
    path = Path(data_dir) / INDEX_FILE
    previous = read_index(path) if path.is_file() and not fresh else None
    df = build_index(data_dir, cfg, previous)
    write_index(df, path)
    return df


def read_index(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(Path(path), engine="pyarrow")
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetIndexError(f"{path}: not a dataset index, missing columns {missing}")
    return df[INDEX_COLUMNS]


def load_dataset(cfg: Config, path: Path | None = None) -> tuple[pd.DataFrame, Path]:
    """(index, root its paths are relative to) for the configured data dir (path None), a data dir, an
    index file, or any contract folder."""
    path = Path(path) if path else cfg.path(cfg.paths.data_dir)
    if path.is_file():
        return read_index(path), path.parent
    if (path / INDEX_FILE).is_file():
        return read_index(path / INDEX_FILE), path
    if (path / SYNTH_DIR).is_dir() or (path / BATCHES_DIR).is_dir():
        return build_index(path, cfg), path
    return index_folder(path, cfg), path

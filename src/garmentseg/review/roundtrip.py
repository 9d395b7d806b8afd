"""The retouch round trip: queued cutouts out to the retouchers in the data contract, their corrections back
in as a batch through the one ingest path (validation, routing, the data plane, the asset), queue closed.

Export writes `raw/<garment>_<View>.png` (the shot) beside `cutouts/<garment>_<View>.png` (the proposed
cutout) so a retoucher edits the cutout in place. Import is an ingest under a batch id named by the folder's
content (`review-<sha256 of its contract files>`), so importing the same folder twice changes nothing; a
corrected pair for a shot already in the dataset supersedes the indexed one (data/index.py).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR, SUFFIX, discover_pairs
from garmentseg.data.plane import DatasetError, contract_files
from garmentseg.imageio import encode_png, read_image
from garmentseg.review.store import ReviewItem, ReviewQueue
from garmentseg.validation.ingest import (
    ALREADY_INGESTED,
    INGESTED,
    IngestOutcome,
    delivery_digest,
    ingest_batch,
)
from garmentseg.validation.report import FINDINGS_JSON

if TYPE_CHECKING:
    from garmentseg.config import Config

EXPORTED_STATES = ("retouch",)
PENDING_STATES = ("pending", "retouch")
BATCH_PREFIX = "review-"


def export_items(
    queue: ReviewQueue, out_dir: Path, *, pending: bool = False, max_pixels: int
) -> list[ReviewItem]:
    """Write the items sent to retouch (with `pending`, also every undecided one) in the data contract."""
    items = queue.items(PENDING_STATES if pending else EXPORTED_STATES)
    for item in items:
        raw = out_dir / RAW_DIR / f"{item.file}{SUFFIX}"
        raw.parent.mkdir(parents=True, exist_ok=True)
        if item.shot_path.suffix.lower() == SUFFIX:
            shutil.copyfile(item.shot_path, raw)
        else:  # a JPEG shot: the contract holds PNGs
            raw.write_bytes(encode_png(read_image(item.shot_path, max_pixels=max_pixels)))
        cutout = out_dir / CUTOUT_DIR / f"{item.file}{SUFFIX}"
        cutout.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.cutout_path, cutout)
    return items


def import_batch_id(folder: Path) -> str:
    """The batch id of a returned folder, from its contract files' content: the same folder, the same id."""
    if not contract_files(Path(folder)):
        raise DatasetError(
            f"{folder}: no files in raw/ or cutouts/ to import (`garmentseg review export` writes "
            "raw/<garment>_<View>.png and cutouts/<garment>_<View>.png)"
        )
    return f"{BATCH_PREFIX}{delivery_digest(folder)[:16]}"


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the ingest's outcome, the items closed, and the files refused (by name)."""

    outcome: IngestOutcome
    closed: list[int]
    refused: list[str]  # "<file>: <check>: <message>" for each error finding

    @property
    def ok(self) -> bool:
        return self.outcome.status in (INGESTED, ALREADY_INGESTED)


def _refusals(outcome: IngestOutcome) -> list[str]:
    findings_file = outcome.report_dir / FINDINGS_JSON if outcome.report_dir else None
    if findings_file is None or not findings_file.is_file():
        return [outcome.message]
    findings = json.loads(findings_file.read_text())
    return [f"{f['file']}: {f['check']}: {f['message']}" for f in findings if f["severity"] == "error"]


def import_corrections(
    cfg: Config, queue: ReviewQueue, folder: Path, *, by: str, push: bool = True
) -> ImportResult:
    """Validate the returned folder with the GX suite and ingest it as a new batch (a failing one is
    quarantined whole, nothing lost); once in the dataset, close the queue items of its shots."""
    folder = Path(folder)
    pairs, _ = discover_pairs(folder)
    files = {f"{p.key.garment_id}_{p.key.view}" for p in pairs}
    outcome = ingest_batch(folder, cfg, batch_id=import_batch_id(folder), push=push)
    if outcome.status not in (INGESTED, ALREADY_INGESTED):
        return ImportResult(outcome, [], _refusals(outcome))
    open_items = [
        i.id for i in queue.items(("pending", "retouch", "accepted", "rejected")) if i.file in files
    ]
    queue.close(open_items, by=by)
    return ImportResult(outcome, open_items, [])

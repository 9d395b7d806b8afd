"""The retouch round trip: queued cutouts out to the retouchers in the data contract, their corrections back
in as a batch through the one ingest path (validation, routing, the data plane, the asset), queue closed.

Export writes `raw/<garment>_<View>.png` (the shot) beside `cutouts/<garment>_<View>.png` (the proposed
cutout) so a retoucher edits the cutout in place; it never writes over a file it did not write, nor into the
platform's own folders. Import is an ingest under a batch id named by the folder's content
(`review-<sha256 of its contract files>`), so importing the same folder twice changes nothing; a corrected
pair for a shot already in the dataset supersedes the indexed one (data/index.py). Only corrections enter:
each returned pair must answer an open item (pending or sent to retouch) with the very shot that was queued
and a cutout that differs from the proposal, or the folder is left where it is with every such file named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR, SUFFIX, Pair, discover_pairs
from garmentseg.data.plane import DatasetError, contract_files, platform_ground
from garmentseg.imageio import ImageError, encode_png, read_header, read_image, sniff_format
from garmentseg.review.store import OPEN_STATES, SUPERSEDED, ReviewItem, ReviewQueue
from garmentseg.validation.content import ACCEPTED_MODES, colour_mode
from garmentseg.validation.ingest import (
    ALREADY_INGESTED,
    INGESTED,
    IngestOutcome,
    delivery_digest,
    ingest_batch,
    ingest_lock,
    where_is,
)
from garmentseg.validation.report import FINDINGS_JSON

if TYPE_CHECKING:
    from garmentseg.config import Config

EXPORTED_STATES = ("retouch",)
BATCH_PREFIX = "review-"


class ReturnedFolderError(DatasetError):
    """A returned folder with pairs that answer no open queue item; it is left where it is."""

    def __init__(self, folder: Path, problems: list[str]):
        super().__init__(
            f"{folder}: not imported, left where it is; each returned pair must answer an open review item "
            "(`garmentseg review export` writes them):\n  " + "\n  ".join(problems)
        )
        self.problems = problems


def export_items(
    queue: ReviewQueue,
    out_dir: Path,
    cfg: Config,
    *,
    pending: bool = False,
    ids: Sequence[int] = (),
    limit: int | None = None,
) -> list[ReviewItem]:
    """Write the items sent to retouch (with `pending`, also every undecided one) in the data contract;
    `ids` and `limit` (worst estimate first) hand each retoucher a share of them. All is checked before the
    first byte is written: the folder is none of the platform's own, every item's stored files are there,
    no two items share a name, and no file in the way holds something else (a retoucher's edit)."""
    _refuse_platform_folder(out_dir, cfg)
    items = queue.items(OPEN_STATES if pending else EXPORTED_STATES)
    if ids:
        exportable = {item.id for item in items}
        if missing := [i for i in dict.fromkeys(ids) if i not in exportable]:
            raise DatasetError(
                "; ".join(_not_exportable(queue, i, pending) for i in missing) + "; nothing exported"
            )
        items = [item for item in items if item.id in ids]  # still worst estimate first
    items = items[:limit] if limit is not None else items
    max_pixels = cfg.validation.max_pixels
    planned: dict[Path, tuple[ReviewItem, Path]] = {}
    for item in items:
        for dest, stored in _export_plan(item, out_dir).items():
            if not stored.is_file():
                raise DatasetError(
                    f"review item {item.id} ({item.file}): its stored file {stored} is missing; nothing exported"
                )
            if dest in planned:
                raise DatasetError(
                    f"review items {planned[dest][0].id} and {item.id} are both {item.file} (two shots under "
                    "one name); decide one of them first; nothing exported"
                )
            planned[dest] = (item, stored)
    in_the_way = [
        str(dest)
        for dest, (_item, stored) in planned.items()
        if dest.exists() and (not dest.is_file() or dest.read_bytes() != _exported_bytes(stored, max_pixels))
    ]
    if in_the_way:
        raise DatasetError(
            f"{out_dir}: would write over files that hold something else (a retoucher's edits?); nothing "
            f"exported. Import them or export to an empty folder: {', '.join(in_the_way)}"
        )
    for dest, (_item, stored) in planned.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_exported_bytes(stored, max_pixels))
    return items


def _not_exportable(queue: ReviewQueue, item_id: int, pending: bool) -> str:
    try:
        item = queue.get(item_id)
    except KeyError as exc:
        return str(exc.args[0])
    if item.state == "pending" and not pending:
        return (
            f"review item {item_id} is pending: give --pending, or `review decide {item_id} --retouch` first"
        )
    return f"review item {item_id} is {item.state}: only open items are exported"


def _refuse_platform_folder(out_dir: Path, cfg: Config) -> None:
    """Export writes for people, never onto the platform's ground; raw/ or cutouts/ linked elsewhere count
    where they point."""
    for folder in (out_dir, out_dir / RAW_DIR, out_dir / CUTOUT_DIR):
        if ground := platform_ground(folder, cfg, deliveries=False):
            raise DatasetError(f"{folder}: {ground}; export to a folder of its own")


def _export_plan(item: ReviewItem, out_dir: Path) -> dict[Path, Path]:
    """Where an item's two stored files go: the shot to raw/, the proposed cutout to cutouts/."""
    name = f"{item.file}{SUFFIX}"
    return {out_dir / RAW_DIR / name: item.shot_path, out_dir / CUTOUT_DIR / name: item.cutout_path}


def _exported_bytes(stored: Path, max_pixels: int) -> bytes:
    """A stored file as exported: a PNG as it is, anything else (a JPEG shot, under any name) re-encoded as
    a PNG, since the contract holds PNGs and validation reads the bytes, not the name; a grey, palette or
    16-bit PNG as 8-bit RGB, the only modes the contract takes for a shot."""
    data = stored.read_bytes()
    if sniff_format(data) == "png" and colour_mode(data, read_header(data)) in ACCEPTED_MODES:
        return data
    return encode_png(read_image(stored, max_pixels=max_pixels))


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
    """Check the returned folder answers the queue, validate it with the GX suite and ingest it as a new
    batch (a failing one is quarantined whole, nothing lost); once in the dataset, close the items it
    answers. A folder already ingested is not checked again: importing it twice changes nothing."""
    folder = Path(folder)
    batch_id = import_batch_id(folder)
    with ingest_lock(cfg):  # two folders correcting one item: the second sees it closed
        answered, problems = answered_items(queue, folder, max_pixels=cfg.validation.max_pixels)
        earlier = where_is(cfg, batch_id)
        if problems and not (earlier and earlier[0] == INGESTED):
            raise ReturnedFolderError(folder, problems)
        outcome = ingest_batch(folder, cfg, batch_id=batch_id, push=push)
        if outcome.status not in (INGESTED, ALREADY_INGESTED):
            return ImportResult(outcome, [], _refusals(outcome))
        queue.close(answered, by=by)
    return ImportResult(outcome, answered, [])


def answered_items(queue: ReviewQueue, folder: Path, *, max_pixels: int) -> tuple[list[int], list[str]]:
    """(the open items the folder's pairs correct, why each other pair corrects none). A pair answers an
    item when the item is open, its shot has the queued shot's pixels (re-saving is fine, editing is not)
    and its cutout's alpha differs from the proposal's (an untouched proposal is no label anyone checked).
    A pair missing a side or unreadable is left to validation, which names it."""
    pairs, _ = discover_pairs(folder)
    items_by_file: dict[str, list[ReviewItem]] = defaultdict(list)
    for item in queue.items():
        items_by_file[item.file].append(item)
    answered, problems = [], []
    for pair in pairs:
        if pair.raw is None or pair.cutout is None:
            continue
        try:
            item, problem = _answered_item(pair, folder, items_by_file[pair.key.stem], max_pixels)
        except (ImageError, OSError):
            continue
        if item is not None:
            answered.append(item.id)
        else:
            problems.append(problem)
    return answered, problems


def _answered_item(
    pair: Pair, folder: Path, items: list[ReviewItem], max_pixels: int
) -> tuple[ReviewItem | None, str]:
    open_items = [i for i in items if i.state in OPEN_STATES]
    if not open_items:
        return None, f"{pair.cutout}: {_why_not_open(pair.key.stem, items)}"
    shot = read_image(folder / pair.raw, max_pixels=max_pixels)
    item = next(
        (i for i in open_items if np.array_equal(read_image(i.shot_path, max_pixels=max_pixels), shot)), None
    )
    if item is None:
        ids = ", ".join(str(i.id) for i in open_items)
        superseded = [
            i
            for i in items
            if i.decided_by == SUPERSEDED
            and np.array_equal(read_image(i.shot_path, max_pixels=max_pixels), shot)
        ]
        if superseded:
            return None, (
                f"{pair.raw}: the shot of review item {superseded[0].id}, superseded: a newer shot under this "
                f"name was queued as item {ids}; export that one"
            )
        return (
            None,
            f"{pair.raw}: not the shot queued as item {ids}; return the shot as exported, edit only the cutout",
        )
    returned = read_image(folder / pair.cutout, max_pixels=max_pixels, alpha=True)
    proposed = read_image(item.cutout_path, max_pixels=max_pixels, alpha=True)
    if returned.shape == proposed.shape and np.array_equal(returned[..., 3], proposed[..., 3]):
        return None, (
            f"{pair.cutout}: the proposed cutout of item {item.id}, unchanged; take the pair out of the "
            f"folder to import the others (the item stays open for whoever works on it), or if it is right "
            f"as it is, `garmentseg review decide {item.id} --accept`"
        )
    return item, ""


def _why_not_open(file: str, items: list[ReviewItem]) -> str:
    if not items:
        return f"no review item for {file}; new shots are delivered with `garmentseg ingest`"
    last = max(items, key=lambda i: i.id)
    if last.state == "closed":
        return f"review item {last.id} for {file} is closed: its correction is in the dataset already"
    verb = "rejected" if last.state == "rejected" else "accepted as it is"
    return (
        f"review item {last.id} for {file} was {verb} by {last.decided_by}; to import a correction, "
        f"`garmentseg review decide {last.id} --retouch` first"
    )

"""The data contract every dataset and incoming batch follows, for studio and synthetic data alike.

    BATCH/raw/<garment_id>_<View>.png       the studio shot (RGB or RGBA)
    BATCH/cutouts/<garment_id>_<View>.png   the retoucher's cutout (RGBA; alpha = ground-truth mask)
    BATCH/garments.csv                      optional: garment_id, garment_type, difficulty

`garment_id` is a UUID, `View` one of Front, FrontRight, Back.
"""

from __future__ import annotations

import csv
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from garmentseg.config import VIEWS

RAW_DIR = "raw"
CUTOUT_DIR = "cutouts"
SUFFIX = ".png"
# Optional per-garment metadata a batch may carry (garment_id, garment_type, difficulty); the synthetic
# studio writes it, real studios may.
GARMENTS_CSV = "garments.csv"
# Folder a quarantined batch carries its own report in; not part of the delivery, so a batch fixed where it
# sits in quarantine can be delivered again as it is.
REPORT_DIR_NAME = "_report"
GARMENTS_COLUMNS = ("garment_id", "garment_type", "difficulty")
_NAME = re.compile(r"^(?P<garment>[^_]+)_(?P<view>[^_.]+)\.png$")
# A batch is named by its folder, and the name becomes a folder, a DVC pointer and a database key.
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ContractError(ValueError):
    """A path that does not follow the data contract; the message names the file and the rule."""


@dataclass(frozen=True, order=True)
class ShotKey:
    """What a file name says: which garment, which view."""

    garment_id: str
    view: str

    @property
    def stem(self) -> str:
        """`<garment>_<View>`: how the review queue and reports name a shot."""
        return f"{self.garment_id}_{self.view}"

    @property
    def filename(self) -> str:
        return f"{self.stem}{SUFFIX}"


@dataclass(frozen=True)
class Pair:
    """One shot and its cutout, as paths relative to the batch root; either side may be missing."""

    key: ShotKey
    raw: str | None
    cutout: str | None


def printable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a zip from an old Windows machine) shown as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def is_text_name(name: str) -> bool:
    """Whether text can name this file: a name that is not UTF-8 can name no output, queue item or row."""
    return printable_name(name) == name


SHOT_SUFFIXES = (".png", ".jpg", ".jpeg")  # what a new shot to cut out may be; a batch holds PNGs only


def parse_shot_file(name: str) -> ShotKey:
    """A new shot's file name, PNG or JPEG of any case (`predict`, the weekly job, `/cutout?queue=true`) ->
    the ShotKey its cutout and queue item are named by; ContractError naming the file otherwise."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or f".{suffix.lower()}" not in SHOT_SUFFIXES:
        raise ContractError(f"{name}: a shot is {' or '.join(SHOT_SUFFIXES)}, named <garment_uuid>_<View>")
    try:
        return parse_shot_name(f"{stem}{SUFFIX}")
    except ContractError as exc:
        raise ContractError(f"{name}: {str(exc).split(': ', 1)[1]}") from None


def parse_shot_name(name: str) -> ShotKey:
    """`<uuid>_<View>.png` -> ShotKey, or ContractError naming the file and the broken rule."""
    if not is_text_name(name):
        raise ContractError(
            f"{printable_name(name)}: file name is not UTF-8 text (written by an old archiver?); "
            "name it <garment_uuid>_<View>.png"
        )
    match = _NAME.match(name)
    if not match:
        raise ContractError(f"{name}: name must be <garment_uuid>_<View>.png with View in {', '.join(VIEWS)}")
    garment, view = match["garment"], match["view"]
    try:
        parsed = uuid.UUID(garment)
    except ValueError:
        raise ContractError(f"{name}: garment id {garment!r} is not a UUID") from None
    if str(parsed) != garment.lower():
        raise ContractError(f"{name}: garment id {garment!r} is not a canonical 8-4-4-4-12 UUID")
    if view not in VIEWS:
        raise ContractError(f"{name}: view {view!r} is not one of {', '.join(VIEWS)}")
    return ShotKey(garment_id=str(parsed), view=view)


# Files operating systems leave beside a delivery: not part of it, ignored with a warning, never ingested.
# Finder writes .DS_Store and AppleDouble `._<name>` files (and `__MACOSX/` inside zip archives), Windows
# Explorer writes Thumbs.db and desktop.ini; a studio copying a batch from a laptop brings them along.
# Lower-cased exact names -> what wrote them.
_OS_JUNK_NAMES = {
    ".ds_store": "macOS Finder folder settings",
    "__macosx": "macOS archive resource forks",
    ".appledouble": "macOS resource forks",
    ".spotlight-v100": "macOS Spotlight index",
    ".trashes": "macOS trash",
    ".fseventsd": "macOS file-system event log",
    ".temporaryitems": "macOS temporary items",
    ".localized": "macOS localisation marker",
    "icon\r": "macOS custom folder icon",
    "thumbs.db": "Windows thumbnail cache",
    "ehthumbs.db": "Windows thumbnail cache",
    "ehthumbs_vista.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    "$recycle.bin": "Windows recycle bin",
}


def os_junk(name: str) -> str | None:
    """What left this file or folder (e.g. 'macOS Finder folder settings'), or None if it is not OS junk."""
    if name.startswith("._"):
        return "macOS AppleDouble resource fork"
    return _OS_JUNK_NAMES.get(name.lower())


def discover_pairs(batch_dir: Path) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Pair raw shots with cutouts by name.

    Returns the pairs (sorted, a side None when its partner is missing) and the files that break the
    contract as (path relative to the batch, reason); OS junk is no part of a batch and is passed over. Never raises for a bad file: a batch is judged
    whole, so every problem is collected.
    """
    if not batch_dir.is_dir():
        raise ContractError(f"{batch_dir}: batch folder does not exist")
    sides: dict[str, dict[ShotKey, str]] = {RAW_DIR: {}, CUTOUT_DIR: {}}
    problems: list[tuple[str, str]] = []
    if not any((batch_dir / side).is_dir() for side in sides):
        raise ContractError(
            f"{batch_dir}: no {RAW_DIR}/ or {CUTOUT_DIR}/ folder; not a batch in the data contract"
        )
    for side, found in sides.items():
        folder = batch_dir / side
        if folder.is_symlink():  # (a file may be a link: DVC's symlink cache makes them)
            problems.append((side + "/", f"{side}/ is a symbolic link; a batch holds its own files"))
            continue
        if not folder.is_dir():
            problems.append((side + "/", f"folder {side}/ is missing"))
            continue
        for path in sorted(folder.iterdir()):
            rel = f"{side}/{printable_name(path.name)}"
            if os_junk(path.name):
                continue
            if path.is_dir():
                problems.append((rel, "unexpected folder inside " + side + "/"))
                continue
            try:
                key = parse_shot_name(path.name)
            except ContractError as exc:
                problems.append((rel, str(exc).split(": ", 1)[1]))
                continue
            if key in found:
                problems.append((rel, f"duplicate of {found[key]} (same garment and view)"))
                continue
            found[key] = rel
    keys = sorted(set(sides[RAW_DIR]) | set(sides[CUTOUT_DIR]))
    pairs = [Pair(key=k, raw=sides[RAW_DIR].get(k), cutout=sides[CUTOUT_DIR].get(k)) for k in keys]
    return pairs, problems + _stray_top_level(batch_dir)


def _stray_top_level(batch_dir: Path) -> list[tuple[str, str]]:
    """What sits beside raw/, cutouts/ and garments.csv and is neither OS junk nor hidden."""
    return [
        (printable_name(top.name), "unexpected entry at batch top level (expected raw/ and cutouts/)")
        for top in sorted(batch_dir.iterdir())
        if top.name not in (RAW_DIR, CUTOUT_DIR, GARMENTS_CSV, REPORT_DIR_NAME)
        and not top.name.startswith(".")
        and not os_junk(top.name)
    ]


def batch_id_of(batch_dir: Path) -> str:
    """A batch is named by its folder."""
    return Path(batch_dir).resolve().name


def batch_id_problem(batch_id: str) -> str | None:
    """Why `batch_id` cannot name a batch, in a data steward's words; None when it can."""
    if _BATCH_ID.match(batch_id):
        return None
    return (
        f"batch id {printable_name(batch_id)!r} cannot name a batch: use up to 128 ASCII letters, digits, "
        "'.', '_' or '-', starting with a letter or digit (no spaces or accents); rename the folder or "
        "pass --batch-id"
    )


def read_garments_csv(path: Path) -> dict[str, tuple[str, str]]:
    """garment id (lower case) -> (garment_type, difficulty) from a batch's garments.csv; ContractError
    naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: {GARMENTS_CSV} is not a file")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in GARMENTS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ContractError(
                    f"{path}: {GARMENTS_CSV} lacks the columns {', '.join(missing)} "
                    f"(a comma-separated header {','.join(GARMENTS_COLUMNS)} is expected)"
                )
            return {
                (row["garment_id"] or "").lower(): (row["garment_type"] or "", row["difficulty"] or "")
                for row in reader
            }
    except UnicodeDecodeError:
        raise ContractError(f"{path}: {GARMENTS_CSV} is not UTF-8 text") from None
    except csv.Error as exc:
        raise ContractError(f"{path}: {GARMENTS_CSV} is not a readable CSV ({exc})") from None

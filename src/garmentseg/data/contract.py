"""The data contract every dataset and incoming batch follows, for studio and synthetic data alike.

    BATCH/raw/<garment_id>_<View>.png       the studio shot (RGB or RGBA)
    BATCH/cutouts/<garment_id>_<View>.png   the retoucher's cutout (RGBA; alpha = ground-truth mask)
    BATCH/garments.csv                      optional: garment_id, garment_type, difficulty

`garment_id` is a UUID, `View` one of Front, FrontRight, Back.
"""

from __future__ import annotations

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
_NAME = re.compile(r"^(?P<garment>[^_]+)_(?P<view>[^_.]+)\.png$")


class ContractError(ValueError):
    """A path that does not follow the data contract; the message names the file and the rule."""


@dataclass(frozen=True, order=True)
class ShotKey:
    """What a file name says: which garment, which view."""

    garment_id: str
    view: str

    @property
    def filename(self) -> str:
        return f"{self.garment_id}_{self.view}{SUFFIX}"


@dataclass(frozen=True)
class Pair:
    """One shot and its cutout, as paths relative to the batch root; either side may be missing."""

    key: ShotKey
    raw: str | None
    cutout: str | None


def parse_shot_name(name: str) -> ShotKey:
    """`<uuid>_<View>.png` -> ShotKey, or ContractError naming the file and the broken rule."""
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
        if not folder.is_dir():
            problems.append((side + "/", f"folder {side}/ is missing"))
            continue
        for path in sorted(folder.iterdir()):
            rel = f"{side}/{path.name}"
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
    for top in sorted(batch_dir.iterdir()):
        if (
            top.name not in sides
            and top.name != GARMENTS_CSV
            and not top.name.startswith(".")
            and not os_junk(top.name)
        ):
            problems.append((top.name, "unexpected entry at batch top level (expected raw/ and cutouts/)"))
    return pairs, problems


def batch_id_of(batch_dir: Path) -> str:
    """A batch is named by its folder."""
    return Path(batch_dir).resolve().name

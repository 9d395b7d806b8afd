"""Batch folder -> per-file metadata table: every file read and decoded once, in parallel, small rows back.

One row per file of the batch (plus one row per view a garment lacks, `present=False`, and one per OS junk
file, which is listed and never read). Each check of the expectation suite reads one column; a column is
null where its check does not apply (a raw shot has no alpha, a file that failed an earlier gate is not
measured further), so every defect is reported once, by the gate that caught it: size -> format -> pixel
limit -> colour mode -> decode -> content -> pair (inverted alpha -> cutout RGB -> edge alignment ->
contrast). The shots are then compared with each other and with the dataset (duplicates.py).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from garmentseg.data.contract import (
    CUTOUT_DIR,
    GARMENTS_CSV,
    RAW_DIR,
    REPORT_DIR_NAME,
    ContractError,
    ShotKey,
    is_text_name,
    os_junk,
    parse_shot_name,
    printable_name,
    read_garments_csv,
)
from garmentseg.imageio import ImageError, ImageHeader, check_size, read_header, read_image, sniff_format
from garmentseg.validation import content
from garmentseg.validation.content import ACCEPTED_MODES

if TYPE_CHECKING:  # workers import this module: keep pandas and the config models out of their start-up
    import pandas as pd

    from garmentseg.config import Config, SourceConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Contrast is measured on a copy whose short side is about this long: the bands stay several pixels wide
# and the cost stays constant per image whatever the studio's resolution.
CONTRAST_SHORT_SIDE = 288
_STRING = "string"
COLUMNS: dict[str, str] = {
    "file": _STRING,  # path relative to the batch: the index of every finding
    "side": _STRING,  # raw | cutouts | other (the folder)
    "garment_id": _STRING,
    "view": _STRING,
    "present": "boolean",  # False: a view the garment lacks (a row for a file that should exist)
    "layout_error": _STRING,
    "os_junk": _STRING,  # what OS metadata file this is (.DS_Store, Thumbs.db...): ignored, never delivered
    "name_error": _STRING,
    "duplicate_of": _STRING,
    "partner_missing": _STRING,
    "bytes": "Int64",
    "file_size_error": _STRING,
    "format": _STRING,  # png | jpeg | unknown (from the magic bytes, whatever the name says)
    "header_size": _STRING,  # WxH as the header claims it, before decoding
    "pixels": "Int64",
    "decode_error": _STRING,
    "width": "Int64",
    "height": "Int64",
    "size": _STRING,  # WxH as decoded
    "aspect": "float64",
    "channels": "Int64",  # channels in the file (header)
    "colour_mode": _STRING,  # '<mode> <depth>-bit' from the PNG IHDR / JPEG frame header
    "colour_mode_error": _STRING,  # a PNG that is not 8-bit RGB(A), or grey pixels in one: not measured further
    "has_alpha": "boolean",  # cutouts only
    "alpha_partial_share": "float64",  # cutouts: share of pixels with 0 < alpha < 255
    "garment_fraction": "float64",  # cutouts: share of pixels with alpha >= 128
    "border_opaque_share": "float64",  # cutouts: share of the frame's outermost pixels with alpha >= 128
    "mask_touches": _STRING,  # cutouts: frame sides the mask reaches ('left,top'); null: none or inverted
    "pair_size_match": "boolean",  # cutouts: same size as the shot
    "partner_size": _STRING,
    "rgb_diff": "float64",  # cutouts: mean |cutout RGB - shot RGB| where alpha == 255
    "brightness": "float64",  # raw: mean luma 0-255
    "contrast": "float64",  # raw: mean colour distance across the mask edge (0-441)
    "edge_alignment": "float64",  # cutouts: image gradient on the mask edge / best with the mask moved (0-1)
    "raw_sha256": _STRING,  # raw: SHA-256 of the file's bytes
    "pixel_sha256": _STRING,  # raw: SHA-256 of the decoded pixels (equal across re-encodings)
    "dhash": _STRING,  # raw: 256-bit perceptual difference hash of the garment (shot under its mask), hex
    "garment_colour": _STRING,  # raw: mean colour of the shot under its mask, #rrggbb
    "same_shot_as": _STRING,  # raw: another garment's shot with identical bytes or pixels (batch or dataset)
    "near_duplicate_of": _STRING,  # raw: another garment's shot that is the same picture re-exported
    "replaces_picture": _STRING,  # raw: the dataset's shot of this garment and view, another picture
}


@dataclass(frozen=True)
class Limits:
    """The settings a worker needs; small and picklable."""

    max_file_bytes: int
    max_pixels: int
    contrast_band_px: int
    cutout_rgb_max_diff: float
    edge_alignment_min: float = 0.0
    alpha_inverted_border_share: float = 1.0
    edge_search_share: float = 0.06

    @classmethod
    def from_config(cls, cfg: Config) -> Limits:
        v = cfg.validation
        return cls(
            v.max_file_bytes,
            v.max_pixels,
            v.contrast_band_px,
            v.cutout_rgb_max_diff,
            v.edge_alignment_min,
            v.alpha_inverted_border_share,
            v.edge_search_share,
        )


@dataclass(frozen=True)
class Unit:
    """One piece of work: a shot with its cutout, or a lone file (either side None)."""

    batch_dir: str
    raw: str | None
    cutout: str | None


@dataclass(frozen=True)
class Plan:
    """What the file listing alone says: rows needing no pixels, and the units to read."""

    rows: list[dict[str, Any]]
    units: list[Unit]


def ensure_readable(batch_dir: Path) -> None:
    """Raise ContractError when the folder is not a batch at all (the exit-2 case)."""
    if not batch_dir.is_dir():
        raise ContractError(f"{batch_dir}: batch folder does not exist or is not a folder")
    if not any((batch_dir / side).is_dir() for side in (RAW_DIR, CUTOUT_DIR)):
        raise ContractError(
            f"{batch_dir}: no {RAW_DIR}/ or {CUTOUT_DIR}/ folder; not a batch in the data contract"
        )


def plan_batch(batch_dir: Path, source_name: str, source: SourceConfig) -> Plan:
    """List the batch: check names, layout, duplicates and partners; pair the files for reading."""
    ensure_readable(batch_dir)
    rows = _stray_top_level_rows(batch_dir)
    lone: list[tuple[str, str]] = []  # (rel, side) read alone
    canonical: dict[str, dict[ShotKey, str]] = {}
    for side in (RAW_DIR, CUTOUT_DIR):
        listing = _list_side(batch_dir, side, source_name, source)
        rows += listing.rows
        lone += [(rel, side) for rel in listing.lone]
        canonical[side] = listing.canonical
    keys = sorted(set(canonical[RAW_DIR]) | set(canonical[CUTOUT_DIR]))
    units: list[Unit] = []
    for key in keys:
        raw, cutout = canonical[RAW_DIR].get(key), canonical[CUTOUT_DIR].get(key)
        rows += _pair_rows(key, raw, cutout)
        units.append(Unit(str(batch_dir), raw, cutout))
    units += [
        Unit(str(batch_dir), rel if side == RAW_DIR else None, rel if side == CUTOUT_DIR else None)
        for rel, side in lone
    ]
    if source.require_all_views:
        rows += _missing_view_rows(keys, canonical, source.views)
    return Plan(rows=rows, units=units)


@dataclass
class _SideListing:
    """One side folder (raw/ or cutouts/) listed: its finding rows, the files read alone (bad names, twins),
    and the one file per shot key that is paired."""

    rows: list[dict[str, Any]]
    lone: list[str]
    canonical: dict[ShotKey, str]


def _stray_top_level_rows(batch_dir: Path) -> list[dict[str, Any]]:
    """Rows for what sits beside raw/ and cutouts/: OS junk, stray entries, and a garments.csv that cannot
    be read (the index would refuse it after validation passed)."""
    rows = []
    for top in sorted(batch_dir.iterdir()):
        junk = os_junk(top.name)
        if junk:
            rows.append(_row(printable_name(top.name), "other", os_junk=junk))
        elif top.name == GARMENTS_CSV:
            try:
                read_garments_csv(top)
            except ContractError as exc:
                rows.append(_row(top.name, "other", layout_error=str(exc).split(": ", 1)[1]))
        elif top.name not in (RAW_DIR, CUTOUT_DIR, GARMENTS_CSV, REPORT_DIR_NAME) and not top.name.startswith(
            "."
        ):
            rows.append(
                _row(
                    printable_name(top.name),
                    "other",
                    layout_error="unexpected entry at the batch top level "
                    f"(a batch holds {RAW_DIR}/, {CUTOUT_DIR}/ and optionally {GARMENTS_CSV})",
                )
            )
    return rows


def _list_side(batch_dir: Path, side: str, source_name: str, source: SourceConfig) -> _SideListing:
    folder = batch_dir / side
    listing = _SideListing(rows=[], lone=[], canonical={})
    if folder.is_symlink():
        listing.rows.append(
            _row(side + "/", "other", layout_error=f"{side}/ is a symbolic link; a batch holds its own files")
        )
        return listing
    if not folder.is_dir():
        listing.rows.append(_row(side + "/", "other", layout_error=f"folder {side}/ is missing"))
        return listing
    found: dict[ShotKey, list[str]] = {}
    for path in sorted(folder.iterdir()):
        rel = f"{side}/{printable_name(path.name)}"
        junk = os_junk(path.name)
        if junk:
            listing.rows.append(_row(rel, side, os_junk=junk))
            continue
        if not is_text_name(path.name):  # reported by name; a file no text can name is not read
            listing.rows.append(_row(rel, side, name_error=_shot_key(path.name, source_name, source)[1]))
            continue
        if path.is_dir() or path.is_symlink():
            what = "folder" if path.is_dir() else "symbolic link"
            listing.rows.append(_row(rel, side, layout_error=f"unexpected {what} inside {side}/"))
            continue
        key, name_error = _shot_key(path.name, source_name, source)
        if key is None:
            listing.rows.append(_row(rel, side, name_error=name_error))
            listing.lone.append(rel)
        else:
            found.setdefault(key, []).append(rel)
    for key, rels in found.items():
        # The file spelled exactly as the contract spells it is the original; the others are twins.
        first, *twins = sorted(rels, key=lambda r: (r != f"{side}/{key.filename}", r))
        listing.canonical[key] = first
        listing.rows += [_row(t, side, key, duplicate_of=f"{first} (same garment and view)") for t in twins]
        listing.lone += twins
    return listing


def _shot_key(name: str, source_name: str, source: SourceConfig) -> tuple[ShotKey | None, str]:
    """The file's garment and view, or None and why its name breaks the contract for this source."""
    try:
        key = parse_shot_name(name)
    except ContractError as exc:
        return None, str(exc).split(": ", 1)[1]
    if key.view not in source.views:
        return (
            None,
            f"view {key.view} is not delivered by source {source_name} (views: {', '.join(source.views)})",
        )
    return key, ""


def _pair_rows(key: ShotKey, raw: str | None, cutout: str | None) -> list[dict[str, Any]]:
    if raw and cutout:
        return [_row(raw, RAW_DIR, key), _row(cutout, CUTOUT_DIR, key)]
    if raw:
        missing = f"shot has no cutout ({CUTOUT_DIR}/{key.filename} is missing)"
        return [_row(raw, RAW_DIR, key, partner_missing=missing)]
    return [
        _row(
            cutout or "",
            CUTOUT_DIR,
            key,
            partner_missing=f"cutout has no shot ({RAW_DIR}/{key.filename} is missing)",
        )
    ]


def _missing_view_rows(
    keys: list[ShotKey], canonical: dict[str, dict[ShotKey, str]], views: Iterable[str]
) -> list[dict[str, Any]]:
    """A `present=False` row for each view a delivered garment lacks on both sides."""
    rows = []
    for garment in sorted({k.garment_id for k in keys}):
        for view in views:
            key = ShotKey(garment, view)
            if key not in canonical[RAW_DIR] and key not in canonical[CUTOUT_DIR]:
                rows.append(_row(f"{RAW_DIR}/{key.filename}", RAW_DIR, key, present=False))
    return rows


def _row(
    file: str, side: str, key: ShotKey | None = None, *, present: bool = True, **fields: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {"file": file, "side": side, "present": present, **fields}
    if key is not None:
        row["garment_id"], row["view"] = key.garment_id, key.view
    return row


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def _load(batch_dir: Path, rel: str, side: str, limits: Limits) -> tuple[dict[str, Any], np.ndarray | None]:
    """Read one file and run the gates; the decoded image (BGR, BGRA for a cutout with alpha) or None."""
    row: dict[str, Any] = {"file": rel}
    data = _read_within_limits(batch_dir / rel, row, limits)
    if data is None or _gate_header(data, side, row, limits) is None:
        return row, None
    if side == RAW_DIR:
        row["raw_sha256"] = hashlib.sha256(data).hexdigest()
    image = _decode_native(data)
    del data
    if image is None:
        row["decode_error"] = "PNG data cannot be decoded (truncated or corrupt)"
        return row, None
    height, width = image.shape[:2]
    row.update(width=width, height=height, size=f"{width}x{height}", aspect=width / height)
    if side == RAW_DIR and content.is_grey(image):  # a cutout of a grey garment on black may be grey
        row["colour_mode_error"] = f"{row['colour_mode']} holding only grey pixels (R = G = B)"
        return row, None
    if side != CUTOUT_DIR:
        row["pixel_sha256"] = content.pixel_digest(image)
        return row, (image if image.shape[2] == 3 else np.ascontiguousarray(image[..., :3]))
    row["has_alpha"] = image.shape[2] == 4
    if not row["has_alpha"]:
        return row, image
    import cv2

    alpha = cv2.extractChannel(image, 3)
    row["alpha_partial_share"] = cv2.countNonZero(cv2.inRange(alpha, 1, 254)) / alpha.size
    row["garment_fraction"] = cv2.countNonZero(cv2.inRange(alpha, 128, 255)) / alpha.size
    if row["garment_fraction"] == 1:  # nothing cut out: the mask_area check's finding alone
        return row, image
    row["border_opaque_share"] = content.border_opaque_share(alpha)
    if row["border_opaque_share"] <= limits.alpha_inverted_border_share:
        row["mask_touches"] = content.touched_sides(alpha)
    return row, image


def _read_within_limits(path: Path, row: dict[str, Any], limits: Limits) -> bytes | None:
    """The file's bytes, or None (and the size finding) when it is empty or over the byte limit."""
    size = path.stat().st_size
    row["bytes"] = size
    if size == 0:
        row["file_size_error"] = "zero-byte file"
        return None
    if size > limits.max_file_bytes:
        row["file_size_error"] = (
            f"{size:,} bytes exceeds the limit of {limits.max_file_bytes:,} bytes; not read"
        )
        return None
    return path.read_bytes()


def _gate_header(data: bytes, side: str, row: dict[str, Any], limits: Limits) -> ImageHeader | None:
    """Format, header, pixel limit and colour mode from the first bytes; None stops the file there."""
    row["format"] = sniff_format(data) or "unknown"
    try:
        header = read_header(data)
    except ImageError as exc:
        if row["format"] == "png":
            row["decode_error"] = f"{exc} ({exc.kind})"
        return None  # not PNG: the format check names what it is
    row["colour_mode"] = content.colour_mode(data, header)
    if row["format"] != "png":
        return None
    row["header_size"] = f"{header.width}x{header.height}"
    row["pixels"] = header.width * header.height
    row["channels"] = header.channels
    try:
        check_size(header, limits.max_pixels)
    except ImageError:
        return None  # the pixels column carries the finding; nothing is decoded
    # A cutout in plain RGB is the alpha_channel check's finding, not a colour-mode one.
    accepted = ("RGB 8-bit",) if side == CUTOUT_DIR and not header.has_alpha else ACCEPTED_MODES
    if row["colour_mode"] not in accepted:
        row["colour_mode_error"] = row["colour_mode"]
        return None
    return header


def _decode_native(data: bytes) -> np.ndarray | None:
    """cv2.imdecode straight from the bytes, in OpenCV's BGR(A) order: these arrays never leave the worker
    (only numbers do) and every measure here is channel-order free, so no colour conversion is paid.
    The header has already been checked against the pixel limit."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def shrink_factor(height: int, width: int) -> int:
    return max(1, round(min(height, width) / CONTRAST_SHORT_SIDE))


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    import cv2

    if factor == 1:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def brightness(bgr_small: np.ndarray) -> float:
    """Mean luma (ITU-R BT.601) of a BGR image, 0-255."""
    import cv2

    blue, green, red, _ = cv2.mean(bgr_small)
    return 0.114 * blue + 0.587 * green + 0.299 * red


def extract_unit(unit: Unit, limits: Limits) -> list[dict[str, Any]]:
    """Read a shot and/or its cutout once and measure everything the suite checks; rows, never pixels."""
    batch_dir = Path(unit.batch_dir)
    raw_row = raw = cut_row = cut = None
    if unit.raw:
        raw_row, raw = _load(batch_dir, unit.raw, RAW_DIR, limits)
    if unit.cutout:
        cut_row, cut = _load(batch_dir, unit.cutout, CUTOUT_DIR, limits)
    small = None
    if raw is not None and raw_row is not None:
        factor = shrink_factor(*raw.shape[:2])
        small = shrink(raw, factor)
        raw_row["brightness"] = brightness(small)
    if raw is not None and cut is not None and raw_row is not None and cut_row is not None:
        cut_row["partner_size"] = raw_row["size"]
        cut_row["pair_size_match"] = raw.shape[:2] == cut.shape[:2]
        if cut_row["pair_size_match"] and cut_row.get("has_alpha"):
            _measure_pair(raw, cut, small, raw_row, cut_row, limits)
    return [r for r in (raw_row, cut_row) if r is not None]


def _measure_pair(
    raw: np.ndarray, cut: np.ndarray, small: np.ndarray | None, raw_row: dict, cut_row: dict, limits: Limits
) -> None:
    """Cutout-vs-shot colour difference, edge contrast and edge alignment, on the shrunk copies.

    The difference is taken over blocks that are entirely opaque in the cutout (shrunk alpha == 255): a
    swapped or misaligned cutout differs there by tens of levels, a true one by rounding only. An inverted
    alpha is not measured further (its own check reports it), nor a mask that covers the whole frame (the
    mask-area check's finding alone: its "RGB" would be the backdrop's), nor the contrast across a mask that
    does not sit on its garment.
    """
    import cv2

    if small is None or cut_row.get("garment_fraction") == 1:
        return
    if cut_row.get("border_opaque_share", 0) > limits.alpha_inverted_border_share:
        return
    factor = shrink_factor(*raw.shape[:2])
    cut_small = shrink(cut, factor)
    alpha = cv2.extractChannel(cut_small, 3)
    opaque = cv2.inRange(alpha, 255, 255)
    if not cv2.countNonZero(opaque):
        return
    diff = cv2.absdiff(cv2.cvtColor(cut_small, cv2.COLOR_BGRA2BGR), small)
    cut_row["rgb_diff"] = sum(cv2.mean(diff, mask=opaque)[:3]) / 3
    if cut_row["rgb_diff"] > limits.cutout_rgb_max_diff:
        return  # the mask belongs to another image: contrast under it would be meaningless
    mask = alpha >= 128
    raw_row["dhash"], raw_row["garment_colour"] = content.garment_signature(small, mask)
    radius = max(2, round(limits.edge_search_share * min(small.shape[:2])))
    cut_row["edge_alignment"] = content.edge_alignment(small, mask, radius)
    if cut_row["edge_alignment"] is not None and cut_row["edge_alignment"] < limits.edge_alignment_min:
        return  # the mask does not sit on the garment: contrast across its edge would be meaningless
    raw_row["contrast"] = content.edge_contrast(small, mask, max(1, round(limits.contrast_band_px / factor)))


def validation_workers(cfg: Config) -> int:
    """Processes for reading and measuring images: validation.workers, at most one per core."""
    return min(cfg.validation.workers, os.cpu_count() or 1)


def in_workers(fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], workers: int) -> list[T]:
    """fn(*job) for every job, in order, over `workers` processes with OpenCV single-threaded in each."""
    if workers <= 1 or len(jobs) < 2:
        _init_worker()
        return [fn(*job) for job in jobs]
    # spawn: the parent may hold threads (GX import, Airflow) that fork would copy in a locked state.
    ctx = multiprocessing.get_context("spawn")
    chunk = max(1, len(jobs) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        return list(pool.map(fn, *zip(*jobs, strict=True), chunksize=chunk))


def shot_signature(raw: Path, cutout: Path, max_pixels: int) -> tuple[str, str] | str:
    """A dataset shot's near-duplicate signature (dHash of the garment, its mean colour), taken on the same
    shrunk copy as a batch's in `_measure_pair`; or why it has none."""
    try:
        shot = read_image(raw, max_pixels=max_pixels)
        alpha = read_image(cutout, max_pixels=max_pixels, alpha=True)
    except (ImageError, OSError) as exc:
        return str(exc)
    factor = shrink_factor(*shot.shape[:2])
    small, mask = shrink(shot[..., ::-1], factor), shrink(alpha[..., 3], factor) >= 128
    return content.garment_signature(np.ascontiguousarray(small), mask)


def build_metadata(batch_dir: Path, cfg: Config, source_name: str | None = None) -> pd.DataFrame:
    """The batch's per-file metadata table (COLUMNS), files read in parallel over cfg.validation.workers,
    then its shots compared with each other and with the dataset."""
    from garmentseg.validation.duplicates import mark_duplicate_shots

    name = source_name or cfg.data.source
    plan = plan_batch(Path(batch_dir), name, cfg.sources[name])
    workers = validation_workers(cfg)
    measured: dict[str, dict[str, Any]] = {}
    limits = Limits.from_config(cfg)
    for rows in in_workers(extract_unit, [(unit, limits) for unit in plan.units], workers):
        for row in rows:
            measured[row["file"]] = row
    log.info("%s: read %d files in %d units (%d workers)", batch_dir, len(measured), len(plan.units), workers)
    return mark_duplicate_shots(to_frame(merge_rows(plan.rows, measured.values())), Path(batch_dir), cfg)


def merge_rows(listed: list[dict[str, Any]], measured: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join the listing's rows with the measured ones on the file column."""
    by_file = {row["file"]: dict(row) for row in listed}
    for row in measured:
        by_file.setdefault(row["file"], {"file": row["file"]}).update(row)
    return [by_file[f] for f in sorted(by_file)]


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with every column of COLUMNS, typed (nullable), in a stable order."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype(COLUMNS)

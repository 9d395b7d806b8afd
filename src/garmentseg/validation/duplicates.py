"""The same shot delivered under two garment ids (a re-export, a copy-paste): found before it can cross splits.

Exact copies (identical bytes, or identical pixels in another encoding) are found within the batch and
against the dataset index's raw_sha256; near copies (the same picture re-exported: recompressed, slightly
brightened) by a perceptual hash of the garment and its mean colour, each candidate confirmed pixel by
pixel over both garments' masks, so that two garments on the same backdrop and mannequin never collide.
The dataset's signatures are computed once per shot and cached by its SHA-256 under the state folder. A
shot of the same garment and view as one already in the dataset is a correction, not a duplicate, when it
is the same picture; another picture under that garment id and view (an id reused for another garment)
would silently replace the dataset's pair, and is reported. Views of one garment share a split and are
not compared. Every copy carries its own finding.
"""

from __future__ import annotations

import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from garmentseg.config import Config
from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR
from garmentseg.imageio import ImageError, read_image
from garmentseg.validation.content import colour_distance, hamming

log = logging.getLogger(__name__)

# Both shots are compared at this size (width x height), enough to tell garments apart, cheap to decode.
COMPARE_SIZE = (96, 144)
SIGNATURES = "shot_signatures.parquet"  # the dataset shots' near-duplicate signatures, by raw_sha256


def mark_duplicate_shots(frame: pd.DataFrame, batch_dir: Path, cfg: Config) -> pd.DataFrame:
    """Fill `same_shot_as`, `near_duplicate_of` and `replaces_picture` on the batch's shots; returns the
    frame. The dataset's index is read once, for the three comparisons with the dataset."""
    from garmentseg.data.index import INDEX_FILE, read_index

    shots = frame[
        (frame["side"] == RAW_DIR)
        & frame["garment_id"].notna()
        & frame["name_error"].isna()
        & frame["duplicate_of"].isna()
        & frame["raw_sha256"].notna()
    ]
    exact: dict[str, list[str]] = {}
    for column, what in (("raw_sha256", "identical bytes"), ("pixel_sha256", "identical pixels")):
        for _, group in shots.groupby(column):
            for file in group["file"]:
                exact.setdefault(file, []).extend(
                    f"{other} ({what})" for other in group["file"] if other != file
                )
    index_path = cfg.path(cfg.paths.data_dir) / INDEX_FILE
    index = read_index(index_path) if not shots.empty and index_path.is_file() else None
    for file, found in _against_dataset(shots, index).items():
        exact.setdefault(file, []).extend(found)
    near = _near_copies(shots, batch_dir, cfg, exact)
    for file, found in _near_dataset_copies(shots, index, batch_dir, cfg, exact).items():
        near.setdefault(file, []).extend(found)
    replaced = _other_pictures_of_known_views(shots, index, batch_dir, cfg)
    frame = frame.copy()
    for column, found in (
        ("same_shot_as", exact),
        ("near_duplicate_of", near),
        ("replaces_picture", replaced),
    ):
        for file, others in found.items():
            if others:
                unique = list(dict.fromkeys(others))
                frame.loc[frame["file"] == file, column] = ", ".join(unique)
    return frame


def _against_dataset(shots: pd.DataFrame, index: pd.DataFrame | None) -> dict[str, list[str]]:
    """Shots whose bytes are already in the dataset (its `index`; None: no dataset yet) under another
    garment id or view."""
    if index is None:
        return {}
    by_hash = index.groupby("raw_sha256")
    found: dict[str, list[str]] = {}
    for row in shots.itertuples():
        if row.raw_sha256 not in by_hash.groups:
            continue
        for entry in by_hash.get_group(row.raw_sha256).itertuples():
            if (entry.garment_id, entry.view) == (row.garment_id, row.view):
                continue  # the same garment and view delivered again: a correction
            found.setdefault(row.file, []).append(
                f"dataset batch {entry.batch_id}: {entry.raw_path} (identical bytes)"
            )
    return found


def _other_pictures_of_known_views(
    shots: pd.DataFrame, index: pd.DataFrame | None, batch_dir: Path, cfg: Config
) -> dict[str, list[str]]:
    """Shots of a garment and view the dataset (its `index`) already holds that are not its picture:
    neither its bytes nor, over both masks, within near_duplicate_max_diff of it (a retoucher's correction
    keeps the shot)."""
    if index is None:
        return {}
    data_dir = cfg.path(cfg.paths.data_dir)
    index = index.set_index(["garment_id", "view"])
    found: dict[str, list[str]] = {}
    for shot in shots.itertuples():
        if (shot.garment_id, shot.view) not in index.index:
            continue
        entry = index.loc[(shot.garment_id, shot.view)]
        if entry["raw_sha256"] == shot.raw_sha256:
            continue
        paths = (data_dir / entry["raw_path"], data_dir / entry["cutout_path"])
        diff = _garment_difference(_pair_paths(batch_dir, shot.file), paths, cfg.validation.max_pixels)
        if diff is not None and diff > cfg.validation.near_duplicate_max_diff:
            found[shot.file] = [
                f"dataset batch {entry['batch_id']}: {entry['raw_path']} (mean diff {diff:.1f})"
            ]
    return found


def _near_copies(
    shots: pd.DataFrame, batch_dir: Path, cfg: Config, exact: dict[str, list[str]]
) -> dict[str, list[str]]:
    """Pairs of shots of two garments whose perceptual hashes and mean colours are close, then match pixel
    for pixel (only these few candidates are read again). Views of one garment may look alike (a plain
    shirt's front and back) and share a split anyway: they are not compared."""
    v = cfg.validation
    rows = shots.dropna(subset=["dhash", "garment_colour"])[["file", "garment_id", "dhash", "garment_colour"]]
    found: dict[str, list[str]] = {}
    for (file_a, garment_a, hash_a, colour_a), (file_b, garment_b, hash_b, colour_b) in combinations(
        list(rows.itertuples(index=False)), 2
    ):
        if garment_a == garment_b or any(entry.startswith(f"{file_b} (") for entry in exact.get(file_a, [])):
            continue  # views of one garment share a split; an exact copy is reported as such
        bits = hamming(hash_a, hash_b)
        if bits > v.near_duplicate_bits or colour_distance(colour_a, colour_b) > v.near_duplicate_max_diff:
            continue
        diff = _garment_difference(
            _pair_paths(batch_dir, file_a), _pair_paths(batch_dir, file_b), v.max_pixels
        )
        if diff is None or diff > v.near_duplicate_max_diff:
            continue
        found.setdefault(file_a, []).append(f"{file_b} ({bits} hash bits, mean diff {diff:.1f})")
        found.setdefault(file_b, []).append(f"{file_a} ({bits} hash bits, mean diff {diff:.1f})")
    return found


def _near_dataset_copies(
    shots: pd.DataFrame,
    index: pd.DataFrame | None,
    batch_dir: Path,
    cfg: Config,
    exact: dict[str, list[str]],
) -> dict[str, list[str]]:
    """Batch shots that are a dataset shot (its `index`) of another garment re-exported."""
    data_dir = cfg.path(cfg.paths.data_dir)
    batch = shots.dropna(subset=["dhash", "garment_colour"])
    if batch.empty or index is None:
        return {}
    v = cfg.validation
    dataset = index.merge(dataset_signatures(index, data_dir, cfg), on="raw_sha256")
    found: dict[str, list[str]] = {}
    for shot in batch.itertuples():
        near = dataset[
            (dataset["garment_id"] != shot.garment_id)
            & (dataset["raw_sha256"] != shot.raw_sha256)
            & (dataset["dhash"].map(lambda h, mine=shot.dhash: hamming(h, mine)) <= v.near_duplicate_bits)
            & (
                dataset["garment_colour"].map(lambda c, mine=shot.garment_colour: colour_distance(c, mine))
                <= v.near_duplicate_max_diff
            )
        ]
        for entry in near.itertuples():
            if any(entry.raw_path in known for known in exact.get(shot.file, [])):
                continue
            paths = (data_dir / entry.raw_path, data_dir / entry.cutout_path)
            diff = _garment_difference(_pair_paths(batch_dir, shot.file), paths, v.max_pixels)
            if diff is not None and diff <= v.near_duplicate_max_diff:
                found.setdefault(shot.file, []).append(
                    f"dataset batch {entry.batch_id}: {entry.raw_path} (mean diff {diff:.1f})"
                )
    return found


def dataset_signatures(index: pd.DataFrame, data_dir: Path, cfg: Config) -> pd.DataFrame:
    """raw_sha256 -> dhash, garment_colour of every dataset shot; computed once per shot (over the validation
    workers: a new node's first ingest signs the whole dataset), then cached."""
    from garmentseg.validation.metadata import in_workers, shot_signature, validation_workers

    cache = cfg.path(cfg.paths.state_dir) / "cache" / SIGNATURES
    known = (
        pd.read_parquet(cache)
        if cache.is_file()
        else pd.DataFrame(columns=["raw_sha256", "dhash", "garment_colour"])
    )
    missing = index[~index["raw_sha256"].isin(known["raw_sha256"])].drop_duplicates("raw_sha256")
    jobs = [
        (data_dir / entry.raw_path, data_dir / entry.cutout_path, cfg.validation.max_pixels)
        for entry in missing.itertuples()
    ]
    signed = in_workers(shot_signature, jobs, validation_workers(cfg))
    rows = []
    for entry, found in zip(missing.itertuples(), signed, strict=True):
        if isinstance(found, str):
            log.warning("%s: no near-duplicate signature (%s)", entry.raw_path, found)
        else:
            rows.append((entry.raw_sha256, *found))
    if rows:
        known = pd.concat([known, pd.DataFrame(rows, columns=list(known.columns))], ignore_index=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp")
        known.to_parquet(tmp, index=False)
        tmp.replace(cache)
        log.info("near-duplicate signatures: %d dataset shots added to %s", len(rows), cache)
    return known


def _pair_paths(batch_dir: Path, raw_rel: str) -> tuple[Path, Path]:
    return batch_dir / raw_rel, batch_dir / CUTOUT_DIR / raw_rel.removeprefix(f"{RAW_DIR}/")


def _garment_difference(a: tuple[Path, Path], b: tuple[Path, Path], max_pixels: int) -> float | None:
    """Mean |RGB difference| of two shots over the union of their cutouts' masks (the whole frame when a
    cutout cannot be read); each argument is (shot, cutout). None when a shot cannot be read."""
    import cv2

    images, masks = [], []
    for shot_path, cutout_path in (a, b):
        try:
            shot = read_image(shot_path, max_pixels=max_pixels)
        except (ImageError, OSError):
            return None
        images.append(cv2.resize(shot, COMPARE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32))
        try:
            alpha = read_image(cutout_path, max_pixels=max_pixels, alpha=True)[..., 3]
            masks.append(cv2.resize(alpha, COMPARE_SIZE, interpolation=cv2.INTER_NEAREST) >= 128)
        except (ImageError, OSError):
            masks.append(np.ones(COMPARE_SIZE[::-1], bool))
    region = masks[0] | masks[1]
    if not region.any():
        region = np.ones_like(region)
    return float(np.abs(images[0] - images[1])[region].mean())

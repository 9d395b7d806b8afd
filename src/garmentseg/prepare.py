"""Decode every pair once, shrink it to the model's input size with INTER_AREA, and cache the tensors.

    <state_dir>/prepared/<H>x<W>/{train,valid,test}.npz   x: uint8 N x H x W x 3 (RGB), y: uint8 N x H x W
                                                          (mask coverage 0..255), garment_id, view
    <state_dir>/prepared/<H>x<W>/stats.json               per-channel mean/std of the training split,
                                                          index hash, counts

The cache is keyed by input size and by a hash of the index content (pairs, checksums, splits), so a new
batch or a new split rebuilds it, while later training runs never decode a PNG again. The ground truth is
the cutout's alpha channel made binary (alpha > 127) at full resolution; shrinking it with INTER_AREA keeps
each pixel's coverage, so edges become soft targets instead of jagged ones. `garmentseg prepare` (the DVC
stage) at the bottom.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np
import pandas as pd

from garmentseg.cliopts import config_options, dataset_option
from garmentseg.config import load_config
from garmentseg.data.index import index_hash, load_dataset
from garmentseg.imageio import read_image
from garmentseg.inference import resize_down

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
STATS_FILE = "stats.json"
ALPHA_CUT = 127  # alpha > 127 is garment; the seed's retouchers deliver alpha as 0 or 255 almost everywhere


@dataclass(frozen=True)
class SplitArrays:
    x: np.ndarray  # uint8 N x H x W x 3, RGB
    y: np.ndarray  # uint8 N x H x W, 0..255 mask coverage
    garment_id: np.ndarray
    view: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, SplitArrays]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    index_hash: str
    input_height: int
    input_width: int
    cache_dir: Path


def cache_dir_for(cfg: Config) -> Path:
    return cfg.path(cfg.paths.state_dir) / "prepared" / f"{cfg.model.input_height}x{cfg.model.input_width}"


def truth_mask(cutout_rgba: np.ndarray) -> np.ndarray:
    """Cutout RGBA -> bool mask from its alpha channel."""
    if cutout_rgba.ndim != 3 or cutout_rgba.shape[2] != 4:
        raise ValueError(f"cutout must be RGBA, got shape {cutout_rgba.shape}")
    return cutout_rgba[..., 3] > ALPHA_CUT


def read_pair(root: Path, row: pd.Series, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """(shot RGB uint8, truth bool mask) at full resolution for one index row."""
    image = read_image(root / row["raw_path"], max_pixels=max_pixels)
    truth = truth_mask(read_image(root / row["cutout_path"], max_pixels=max_pixels, alpha=True))
    if image.shape[:2] != truth.shape:
        raise ValueError(
            f"{row['cutout_path']}: cutout {truth.shape[1]}x{truth.shape[0]} differs from shot "
            f"{image.shape[1]}x{image.shape[0]}; a cutout must match its shot pixel for pixel"
        )
    return image, truth


def _shrink_pair(root: Path, row: pd.Series, height: int, width: int, max_pixels: int) -> tuple:
    image, truth = read_pair(root, row, max_pixels)
    x = resize_down(image, height, width)
    y = resize_down(truth.astype(np.uint8) * 255, height, width)
    return x, y


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in the 0..1 scale inference uses."""
    flat = x.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(float(v) for v in flat.mean(0)), tuple(float(max(v, 1e-3)) for v in flat.std(0))


def _build_split(frame: pd.DataFrame, root: Path, height: int, width: int, max_pixels: int, workers: int):
    rows = [row for _, row in frame.iterrows()]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pairs = list(pool.map(lambda r: _shrink_pair(root, r, height, width, max_pixels), rows))
    x = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, height, width, 3), np.uint8)
    y = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, height, width), np.uint8)
    return SplitArrays(
        x, y, np.array(frame["garment_id"].tolist(), dtype=str), np.array(frame["view"].tolist(), dtype=str)
    )


def _load_cache(cache_dir: Path, want_hash: str) -> Prepared | None:
    stats_path = cache_dir / STATS_FILE
    if not stats_path.is_file():
        return None
    stats = json.loads(stats_path.read_text())
    if stats.get("index_hash") != want_hash:
        log.info(
            "%s: index changed (%s.. -> %s..), rebuilding",
            cache_dir,
            stats.get("index_hash", "")[:8],
            want_hash[:8],
        )
        return None
    splits = {}
    for split in SPLITS:
        with np.load(cache_dir / f"{split}.npz", allow_pickle=False) as npz:
            splits[split] = SplitArrays(npz["x"], npz["y"], npz["garment_id"], npz["view"])
    return Prepared(
        splits,
        tuple(stats["mean"]),
        tuple(stats["std"]),
        want_hash,
        stats["input_height"],
        stats["input_width"],
        cache_dir,
    )


def prepare(
    frame: pd.DataFrame,
    root: Path,
    *,
    input_height: int,
    input_width: int,
    cache_dir: Path,
    max_pixels: int = 40_000_000,
    workers: int = 2,
    force: bool = False,
) -> Prepared:
    """Cached input-size tensors for every split, and the training split's per-channel mean/std."""
    want = index_hash(frame)
    if not force and (cached := _load_cache(cache_dir, want)) is not None:
        log.info("prepared tensors from cache %s", cache_dir)
        return cached
    if not (frame["split"] == "train").any():
        raise ValueError("the index has no row with split == 'train'; cannot compute normalisation stats")
    cache_dir.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        splits[split] = _build_split(part, Path(root), input_height, input_width, max_pixels, workers)
        np.savez(cache_dir / f"{split}.npz", **splits[split].__dict__)
        log.info("prepared %s: %d pairs at %dx%d", split, len(part), input_height, input_width)
    mean, std = channel_stats(splits["train"].x)
    stats = {
        "index_hash": want,
        "input_height": input_height,
        "input_width": input_width,
        "mean": mean,
        "std": std,
        "counts": {s: len(a) for s, a in splits.items()},
        "resize": "INTER_AREA",
        "truth": f"cutout alpha > {ALPHA_CUT}, then INTER_AREA coverage",
    }
    (cache_dir / STATS_FILE).write_text(json.dumps(stats, indent=2))
    return Prepared(splits, mean, std, want, input_height, input_width, cache_dir)


def prepare_for(cfg: Config, frame: pd.DataFrame, root: Path, force: bool = False) -> Prepared:
    """prepare() with sizes, paths and limits from the config."""
    return prepare(
        frame,
        root,
        input_height=cfg.model.input_height,
        input_width=cfg.model.input_width,
        cache_dir=cache_dir_for(cfg),
        max_pixels=cfg.validation.max_pixels,
        workers=cfg.validation.workers,
        force=force,
    )


@click.command("prepare")
@config_options
@dataset_option
@click.option("--force", is_flag=True, help="Rebuild the tensors even when the cache matches the index.")
def prepare_cmd(profile: str | None, params: str | None, dataset: Path | None, force: bool) -> None:
    """Decode every pair once and cache the model-input-size tensors (the DVC `prepare` stage)."""
    cfg = load_config(profile, params)
    frame, root = load_dataset(cfg, dataset)
    prepared = prepare_for(cfg, frame, root, force=force)
    log.info("prepared tensors in %s (index %s)", prepared.cache_dir, prepared.index_hash[:12])

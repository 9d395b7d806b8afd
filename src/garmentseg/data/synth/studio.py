"""A synthetic batch on disk: plan the garments, render them (in parallel), write the data contract."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from garmentseg.config import VIEWS, Config
from garmentseg.data.contract import CUTOUT_DIR, GARMENTS_CSV, RAW_DIR, ShotKey
from garmentseg.data.synth.garment import GarmentSpec, plan_garments
from garmentseg.data.synth.render import render_garment
from garmentseg.imageio import write_png
from garmentseg.inference import to_cutout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    garments: int
    pairs: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("inf")


def _render_and_write(args: tuple[GarmentSpec, Path, int, int]) -> int:
    spec, out_dir, width, height = args
    for view, (shot, alpha) in render_garment(spec, width, height).items():
        name = ShotKey(spec.garment_id, view).filename
        write_png(out_dir / RAW_DIR / name, shot)
        write_png(out_dir / CUTOUT_DIR / name, to_cutout(shot, alpha))
    return len(VIEWS)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def synthesize(
    out_dir: Path,
    garments: int,
    seed: int,
    cfg: Config,
    workers: int | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
) -> SynthSummary:
    """Write a synthetic batch in the data contract (raw/, cutouts/, garments.csv) to out_dir."""
    size = cfg.sources["studio"].exact_size or (1152, 1728)
    width, height = width or size[0], height or size[1]
    out_dir = Path(out_dir)
    for side in (RAW_DIR, CUTOUT_DIR):
        (out_dir / side).mkdir(parents=True, exist_ok=True)
    specs = plan_garments(garments, seed, cfg.synth.hard_cases)
    workers = max(1, min(workers or os.cpu_count() or 1, garments))
    start = time.perf_counter()
    jobs = [(s, out_dir, width, height) for s in specs]
    bar = tqdm(total=garments, desc="synth", unit="garment", disable=None, leave=False)
    pairs = 0
    if workers == 1:
        for job in jobs:
            pairs += _render_and_write(job)
            bar.update()
    else:
        # forkserver, not fork: a forked child inherits OpenCV's thread pool locks and can hang.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
            for n in pool.map(_render_and_write, jobs):
                pairs += n
                bar.update()
    bar.close()
    with (out_dir / GARMENTS_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["garment_id", "garment_type", "difficulty"])
        for s in specs:
            writer.writerow([s.garment_id, s.garment_type, s.difficulty])
    seconds = time.perf_counter() - start
    summary = SynthSummary(out_dir, garments, pairs, seconds)
    log.info(
        "synth: %d garments, %d pairs in %.1fs (%.2f pairs/s) -> %s",
        garments,
        pairs,
        seconds,
        summary.pairs_per_second,
        out_dir,
    )
    return summary

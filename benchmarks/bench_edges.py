"""Edge refinement at full resolution: refine none vs guided (a few radius / eps / guide values) on one
trained model, in one run: quality of the edges and what the refinement costs per shot.

    uv run python benchmarks/bench_edges.py --model-uri URI [--profile demo] [--dataset DIR] [--holdout DIR]
        [--config guided:colour:8:0.001:4 ...] [--timing-shots 12] [--json OUT]

Each configuration is applied to the same logged model as training would apply it, all of them as
training's refinement candidates (evaluation.choose_refinement): the mask threshold re-tuned on the
validation split with the refined probability, the valid split scored, and the one training would keep
marked `chosen`. Then the test split (or every pair of --holdout, a contract folder the model never saw) is
scored at full resolution with each (evaluation.evaluate: Dice, boundary F at 2 px, boundary IoU, halo).
Cost, per shot at the test shots' size, median of --timing-shots: the refinement alone (edges.refine_proba),
the soft alpha alone (inference.cutout_alpha), and the bare /cutout pipeline (predict_proba -> alpha ->
PNG encode; the endpoint measured 1.04-1.07x of it, README). Ratios are against the first configuration
of this run (refine none by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import emit
from _timing import milliseconds_each

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_CONFIGS = (
    "none",
    "guided:colour:8:0.001:4",
    "guided:colour:4:0.001:2",
    "guided:colour:16:0.001:4",
    "guided:colour:8:0.0001:4",
    "guided:colour:8:0.01:4",
    "guided:grey:8:0.001:4",
)
QUALITY = ("dice_median", "dice_p10", "bf_score_median", "boundary_iou_0p5pct_median", "halo_median")
# the review estimate, calibrated on valid under each refinement as training calibrates it (issue #17)
REVIEW = ("below_target_share", "review_auroc", "review_share", "review_recall")


def _median_ms(fn, shots: list[np.ndarray]) -> float:
    fn(shots[0])  # warm up
    return float(np.median(milliseconds_each(fn, shots)))


def costs(model, shots: list[np.ndarray]) -> dict[str, float]:
    """Per-shot milliseconds (median) of the refinement, the soft alpha and the bare /cutout pipeline."""
    from garmentseg.edges import refine_proba
    from garmentseg.imageio import encode_png
    from garmentseg.inference import cutout_alpha, to_cutout, upsample_proba

    small = {id(s): model.predict_small(model.preprocess(s)[None])[0] for s in shots}
    up = {id(s): upsample_proba(small[id(s)], *s.shape[:2]) for s in shots}
    refined = {id(s): refine_proba(up[id(s)], s, model.refinement) for s in shots}

    def cutout(shot: np.ndarray, alpha: str) -> bytes:
        prob = model.predict_proba([shot])[0]
        return encode_png(to_cutout(shot, cutout_alpha(prob, model.threshold, alpha)))

    return {
        "refine_ms": _median_ms(lambda s: refine_proba(up[id(s)], s, model.refinement), shots),
        "soft_alpha_ms": _median_ms(lambda s: cutout_alpha(refined[id(s)], model.threshold, "soft"), shots),
        "cutout_binary_ms": _median_ms(lambda s: cutout(s, "binary"), shots),
        "cutout_soft_ms": _median_ms(lambda s: cutout(s, "soft"), shots),
    }


def score(model, frame, root, cfg, scored: tuple) -> tuple[Any, dict[str, Any]]:
    """The model tuned on valid as training tunes it (threshold, flag threshold, review estimate), and the
    figures of `scored` (frame, root, split) with it."""
    from garmentseg import evaluation

    choice = evaluation.tune_threshold(model, frame, root, cfg)
    model = dataclasses.replace(
        model, threshold=choice.threshold, flag_threshold=choice.flag_threshold, quality=choice.quality
    )
    summary = evaluation.evaluate(model, scored[0], scored[1], cfg, split=scored[2], gallery=False).summary
    return model, {
        "n": summary["n"],
        **{k: summary[k] for k in QUALITY},
        **{k: summary.get(k) for k in REVIEW},
    }


def ratios(row: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Against refine none: errors (1 - Dice, 1 - BF, 1 - boundary IoU, halo) and cost, as ratios."""
    out = {
        "dice_error_ratio": (1 - row["dice_median"]) / max(1 - base["dice_median"], 1e-9),
        "bf_error_ratio": (1 - row["bf_score_median"]) / max(1 - base["bf_score_median"], 1e-9),
        "biou_error_ratio": (1 - row["boundary_iou_0p5pct_median"])
        / max(1 - base["boundary_iou_0p5pct_median"], 1e-9),
        "halo_ratio": row["halo_median"] / max(base["halo_median"], 1e-9),
        "cutout_ms_ratio": row["cutout_binary_ms"] / base["cutout_binary_ms"],
    }
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    from garmentseg import evaluation
    from garmentseg import prepare as prep
    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.edges import as_params, describe, parse
    from garmentseg.inference import load_cutout_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--holdout", type=Path, default=None, help="score this folder whole, not test")
    parser.add_argument("--config", action="append", default=None, help="none | guided:guide:r:eps:s")
    parser.add_argument("--timing-shots", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    first, *others = [parse(text) for text in args.config or DEFAULT_CONFIGS]
    # every configuration a candidate, so training's own choice on valid is in the table
    inference = {**as_params(first), "candidates": [as_params(r) for r in others]}
    cfg = load_config(args.profile, overrides={"evaluation": {"gallery_size": 0}, "inference": inference})
    base_model = load_cutout_model(args.model_uri, cfg.tracking_uri)
    frame, root = load_dataset(cfg, args.dataset)
    scored = (*load_dataset(cfg, args.holdout), "all") if args.holdout else (frame, root, "test")
    test = scored[0] if args.holdout else frame[frame["split"] == "test"]
    shots = [
        prep.read_pair(scored[1], row, cfg.validation.max_pixels)[0]
        for _, row in test.head(args.timing_shots).iterrows()
    ]
    started = time.perf_counter()
    on_valid = evaluation.choose_refinement(
        dataclasses.replace(base_model, refinement=first), frame, root, cfg
    ).candidates or [{"refinement": describe(first)}]  # one configuration: nothing to choose between
    print(f"chosen on valid in {time.perf_counter() - started:.0f} s: {on_valid}", flush=True)
    rows = []
    for valid in on_valid:
        started = time.perf_counter()
        model = dataclasses.replace(base_model, refinement=parse(valid["refinement"]))
        model, figures = score(model, frame, root, cfg, scored)
        rows.append(
            {
                "config": valid.pop("refinement"),
                **valid,
                **figures,
                **costs(model, shots),
                "score_seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(rows[-1], flush=True)
    for row in rows:
        row.update(ratios(row, rows[0]))
    emit(
        {
            "model_uri": args.model_uri,
            "profile": args.profile,
            "scored": str(args.holdout) if args.holdout else "test split",
            "shot_size": f"{shots[0].shape[1]}x{shots[0].shape[0]}",
            "cpus": os.cpu_count(),
            "load_1min": os.getloadavg()[0],
            "rows": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()

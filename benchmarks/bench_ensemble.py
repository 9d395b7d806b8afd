"""A small ensemble of folds (the seed's bagging idea): several logged models, each trained on another
garment-level split, their full-resolution probabilities averaged, scored against each member alone, in one run.

    uv run python benchmarks/bench_ensemble.py --profile real --dataset var/real/holdout \
        --model-uri URI_FOLD_0 --model-uri URI_FOLD_1 --model-uri URI_FOLD_2 [--json OUT]

Train the members with `benchmarks/real_photos.py --set data.splits.seed=K` (another train/valid/test draw
of the same 500 photos for each K). Each member predicts as it would alone (its own refinement); the
ensemble averages those probabilities and thresholds the mean at the members' mean threshold. Every pair of
--dataset is scored at its own resolution (Dice, boundary F at 2 px, boundary IoU, halo), the forward cost
timed per photo; ratios are against the first member.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUALITY = ("dice", "bf_score", "boundary_iou_0p5pct", "halo")


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """The Dice statistics evaluation reports (metrics.summarise), and the edge figures' medians."""
    from garmentseg.model import metrics as M

    return {
        **M.summarise([r["dice"] for r in rows], "dice_"),
        **{f"{k}_median": float(np.median([r[k] for r in rows])) for k in QUALITY[1:]},
    }


def main() -> None:
    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import load_cutout_model, to_mask
    from garmentseg.model import metrics as M
    from garmentseg.prepare import read_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="real")
    parser.add_argument("--model-uri", action="append", required=True, help="one per member, two or more")
    parser.add_argument("--dataset", type=Path, required=True, help="a contract folder the members never saw")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if len(args.model_uri) < 2:
        parser.error("an ensemble needs two or more --model-uri")
    cfg = load_config(args.profile)
    ev = cfg.evaluation
    members = [load_cutout_model(uri, cfg.tracking_uri) for uri in args.model_uri]
    threshold = float(np.mean([m.threshold for m in members]))
    frame, root = load_dataset(cfg, args.dataset)
    scores: dict[str, list[dict[str, float]]] = {f"member_{i}": [] for i in range(len(members))}
    scores["ensemble"] = []
    seconds = [0.0] * len(members)
    for n, (_, row) in enumerate(frame.iterrows(), 1):
        image, truth = read_pair(root, row, cfg.validation.max_pixels)
        probs = []
        for i, member in enumerate(members):
            started = time.perf_counter()
            probs.append(member.predict_proba([image])[0])
            seconds[i] += time.perf_counter() - started
            pred = to_mask(probs[-1], member.threshold)
            scores[f"member_{i}"].append(
                M.mask_scores(pred, truth, ev.boundary_fraction, ev.boundary_f_tolerance_px, ev.halo_band_px)
            )
        pred = to_mask(np.mean(probs, axis=0), threshold)
        scores["ensemble"].append(
            M.mask_scores(pred, truth, ev.boundary_fraction, ev.boundary_f_tolerance_px, ev.halo_band_px)
        )
        if n % 20 == 0:
            print(f"{n}/{len(frame)} photos", flush=True)
    rows = {name: summarise(found) for name, found in scores.items()}
    base = rows["member_0"]
    figures = {
        "dataset": str(args.dataset),
        "n": len(frame),
        "members": args.model_uri,
        "member_thresholds": [m.threshold for m in members],
        "member_refinements": [m.refinement.to_dict() for m in members],
        "ensemble_threshold": threshold,
        "rows": rows,
        "forward_ms_per_photo": {f"member_{i}": 1000 * s / len(frame) for i, s in enumerate(seconds)},
        "ensemble_vs_member_0": {
            "dice_error_ratio": (1 - rows["ensemble"]["dice_median"]) / max(1 - base["dice_median"], 1e-9),
            "bf_error_ratio": (1 - rows["ensemble"]["bf_score_median"])
            / max(1 - base["bf_score_median"], 1e-9),
            "cost_ratio": sum(seconds) / max(seconds[0], 1e-9),
        },
    }
    emit(figures, args.json)


if __name__ == "__main__":
    main()

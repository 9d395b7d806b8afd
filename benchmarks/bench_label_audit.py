"""Precision at k and recall of the label audit on a synthetic studio batch, where the wrong labels are known.

    uv run python benchmarks/bench_label_audit.py --model-uri URI --batch DIR --garments N --seed S \
        [--noisy-share F] [--min-diff F] [--corrupt N] [--split S ...] [--ceiling] [--json OUT]

The bad labels are (1) the synthetic studio's `noisy_truth` cutouts, found exactly: every garment tagged
noisy_truth is rendered again with `exact_truth=True` and a cutout counts as wrong when its alpha differs
from the exact one on at least `--min-diff` of the garment's area (a thin-arms mistake on a skirt changes
nothing and is not a wrong label); (2) with `--corrupt N`, N clean pairs of a copy of the batch damaged one
way each in turn (a region removed, edges eroded or dilated by 9 px, a hole, a spill onto the backdrop).
The audit (`garmentseg.labels.audit.audit_labels`) ranks every pair; k = number of bad labels. Reported:
precision@k (= recall@k), recall@2k, average precision, the rank of each bad label with its kind and the
audit's reason. `edge_weight_sweep` ranks the same run's pairs again with the label's edge evidence
(`labels.evidence`) weighted 0 (cleanlab alone) to 1 (`labels.audit.combined_score`), `outline_weight_sweep`
with the outline's evidence weighted 0 (left out) to 3 (`labels.audit.audit_score`), and `scored` lists each
pair's cleanlab score, edge support and off-outline share, so a weight is chosen from one run's figures. `--ceiling` adds the same figures for the audit's score against the best mask a model of
the configured input size could make (the exact truth through the resize round trip): what the score does
when the model's own mistakes are out of the way. `--split` keeps only some splits of the batch's index (e.g. the pairs a model did not
train on).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from _report import emit

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
CORRUPTIONS = ("removed", "eroded", "dilated", "hole", "spill")
EDGE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
OUTLINE_WEIGHTS = (0.0, 1.0, 1.5, 2.0, 3.0)


def _corrupt(kind: str, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    out = alpha.copy()
    ys, xs = np.nonzero(alpha)
    if kind == "removed":  # a sleeve or hem left out: a band across the garment a fifth of its height
        top = ys.min() + int(rng.uniform(0.3, 0.7) * (ys.max() - ys.min()))
        out[top : top + (ys.max() - ys.min()) // 5] = 0
    elif kind in ("eroded", "dilated"):
        op = cv2.erode if kind == "eroded" else cv2.dilate
        out = op(alpha, np.ones((19, 19), np.uint8))  # 9 px each side at 1152x1728
    elif kind == "hole":  # a disc punched out well inside the garment
        inner = cv2.erode(alpha, np.ones((61, 61), np.uint8))
        iy, ix = np.nonzero(inner)
        i = rng.integers(len(iy))
        hole = np.zeros_like(alpha)
        cv2.circle(hole, (int(ix[i]), int(iy[i])), 40, 255, -1)
        out[(hole > 0) & (inner > 0)] = 0
    elif kind == "spill":
        side = xs.min() - 60 if rng.random() < 0.5 else xs.max() + 60
        cv2.ellipse(out, (int(side), int(ys.mean())), (70, 110), 0, 0, 360, 255, -1)
    return out


def noisy_bad(batch: Path, garments: int, seed: int, noisy_share: float, cfg, min_diff: float) -> dict:
    """file -> share of the garment its noisy_truth cutout gets wrong, for cutouts wrong by >= min_diff."""
    from garmentseg.data.synth.garment import plan_garments
    from garmentseg.data.synth.render import render_garment
    from garmentseg.imageio import read_image

    hard = cfg.synth.hard_cases.model_copy(update={"noisy_truth": noisy_share})
    bad = {}
    for spec in plan_garments(garments, seed, hard):
        if "noisy_truth" not in spec.difficulty:
            continue
        h, w = read_image(next((batch / "raw").glob(f"{spec.garment_id}_*.png")), max_pixels=10**8).shape[:2]
        for view, (_, exact) in render_garment(spec, w, h, exact_truth=True).items():
            file = f"{spec.garment_id}_{view}"
            alpha = read_image(batch / "cutouts" / f"{file}.png", max_pixels=10**8, alpha=True)[..., 3]
            share = float(np.count_nonzero((alpha > 127) != (exact > 127)) / max(np.count_nonzero(exact), 1))
            if share >= min_diff:
                bad[file] = f"noisy_truth ({share:.1%} of the garment)"
    return bad


def corrupt_copy(batch: Path, out: Path, n: int, avoid: set[str], seed: int) -> dict:
    """Copy the batch to out and damage n clean cutouts, one kind after another; file -> kind."""
    from garmentseg.imageio import read_image, write_png

    shutil.copytree(batch, out)
    rng = np.random.default_rng(seed)
    files = sorted(p.stem for p in (out / "cutouts").glob("*.png") if p.stem not in avoid)
    damaged = {}
    for i, file in enumerate(rng.permutation(files)[:n]):
        kind = CORRUPTIONS[i % len(CORRUPTIONS)]
        path = out / "cutouts" / f"{file}.png"
        rgba = read_image(path, max_pixels=10**8, alpha=True)
        raw = read_image(out / "raw" / f"{file}.png", max_pixels=10**8)
        alpha = _corrupt(kind, rgba[..., 3], rng)
        write_png(path, np.dstack([np.where(alpha[..., None] > 0, raw, 0), alpha]).astype(np.uint8))
        damaged[str(file)] = kind
    return damaged


def ceiling_ranking(batch: Path, garments: int, seed: int, noisy_share: float, cfg) -> list[str]:
    """Files ranked by the audit's score against the best mask a model of this input size can make: the
    exact truth shrunk to the input size and grown back (the inference path's resize round trip)."""
    from garmentseg.data.synth.garment import plan_garments
    from garmentseg.data.synth.render import render_garment
    from garmentseg.imageio import read_image
    from garmentseg.inference import resize_down, upsample_proba
    from garmentseg.labels.audit import label_quality, shrink

    hard = cfg.synth.hard_cases.model_copy(update={"noisy_truth": noisy_share})
    size = (cfg.model.input_height, cfg.model.input_width)
    scores = {}
    for spec in plan_garments(garments, seed, hard):
        h, w = read_image(next((batch / "raw").glob(f"{spec.garment_id}_*.png")), max_pixels=10**8).shape[:2]
        for view, (shot, exact) in render_garment(spec, w, h, exact_truth=True).items():
            file = f"{spec.garment_id}_{view}"
            label = read_image(batch / "cutouts" / f"{file}.png", max_pixels=10**8, alpha=True)[..., 3] > 127
            prob = upsample_proba(resize_down(exact.astype(np.float32) / 255, *size), h, w)
            _, small_label, small_prob = shrink(shot, label, prob, cfg)
            scores[file] = 1 - label_quality(small_label, small_prob, cfg.labels.temperature)
    return sorted(scores, key=lambda f: (-scores[f], f))


def figures(ranked: list[str], bad: set[str]) -> dict:
    k = len(bad)
    hits = [f in bad for f in ranked]
    precisions = [sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h]
    return {
        "k": k,
        "precision_at_k": sum(hits[:k]) / k if k else None,
        "recall_at_2k": sum(hits[: 2 * k]) / k if k else None,
        "average_precision": float(np.mean(precisions)) if precisions else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("--garments", type=int, required=True, help="as synthesised")
    parser.add_argument("--seed", type=int, required=True, help="as synthesised")
    parser.add_argument("--noisy-share", type=float, default=None, help="synth.hard_cases.noisy_truth used")
    parser.add_argument("--min-diff", type=float, default=0.005)
    parser.add_argument("--corrupt", type=int, default=0)
    parser.add_argument("--split", nargs="*", default=None, help="audit only these splits")
    parser.add_argument("--ceiling", action="store_true", help="also rank against the best possible mask")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import load_cutout_model
    from garmentseg.labels.audit import audit_labels, audit_score

    cfg = load_config("demo")
    share = cfg.synth.hard_cases.noisy_truth if args.noisy_share is None else args.noisy_share
    bad = noisy_bad(args.batch, args.garments, args.seed, share, cfg, args.min_diff)
    batch = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        if args.corrupt:
            batch = Path(tmp) / "batch"
            bad |= corrupt_copy(args.batch, batch, args.corrupt, set(bad), args.seed)
        frame, root = load_dataset(cfg, batch)
        if args.split:
            frame = frame[frame["split"].isin(args.split)].reset_index(drop=True)
        bad = {f: why for f, why in bad.items() if f in set(frame["garment_id"] + "_" + frame["view"])}
        model = load_cutout_model(args.model_uri, cfg.tracking_uri)
        ranked = audit_labels(frame, root, model, cfg, out_dir=Path(tmp) / "audit")
        best = ceiling_ranking(batch, args.garments, args.seed, share, cfg) if args.ceiling else None
    position = {s.file: i + 1 for i, s in enumerate(ranked)}
    evidence = {s.file: (s.quality_score, s.edge_support, s.off_outline) for s in ranked}

    def reranked(**weights: float) -> list[str]:
        labels = cfg.labels.model_copy(update=weights)
        return sorted(evidence, key=lambda f: (-audit_score(*evidence[f], labels), f))

    result = {
        "batch": str(args.batch),
        "model_uri": args.model_uri,
        "pairs": len(ranked),
        "splits": args.split or "all",
        "audit": figures([s.file for s in ranked], set(bad)),
        "ceiling": figures(best, set(bad)) if best else None,
        "edge_weight_sweep": {f"{w:g}": figures(reranked(edge_weight=w), set(bad)) for w in EDGE_WEIGHTS},
        "outline_weight_sweep": {
            f"{w:g}": figures(reranked(outline_weight=w), set(bad)) for w in OUTLINE_WEIGHTS
        },
        "bad": sorted(
            (
                {"file": f, "damage": why, "rank": position[f], "reason": ranked[position[f] - 1].reason}
                for f, why in bad.items()
            ),
            key=lambda r: r["rank"],
        ),
        "top": [
            {"file": s.file, "score": round(s.score, 4), "bad": s.file in bad} for s in ranked[: 2 * len(bad)]
        ],
        "scored": [
            {
                "file": s.file,
                "quality_score": round(s.quality_score, 5),
                "edge_support": round(s.edge_support, 4),
                "off_outline": round(s.off_outline, 4),
                "bad": bad.get(s.file),
            }
            for s in ranked
        ],
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

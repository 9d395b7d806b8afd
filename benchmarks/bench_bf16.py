"""bf16 inference (keras `mixed_bfloat16`) against float32 for a trained model: speed and test Dice.

    uv run python benchmarks/bench_bf16.py --model-uri URI --dataset DIR [--profile cpu] [--split test]
                                           [--n 20] [--json OUT]

The same weights are loaded into a float32 model and its bf16 twin (garmentseg.inference.in_precision, what
serving.precision=bfloat16 serves: every layer under mixed_bfloat16, the sigmoid classifier float32).
Measured in one run: the forward pass and the whole shot -> cutout pipeline (p50 over --n rounds at
batch 1), then the full-resolution evaluation of both on the same split. Serving adopts bf16 only if it is faster and test median Dice moves by < 0.0005.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MAX_DICE_SHIFT = 0.0005


def timings(model, shot: np.ndarray, n: int) -> dict[str, float]:
    from garmentseg.imageio import encode_png
    from garmentseg.inference import to_cutout, to_mask

    batch = np.stack([model.preprocess(shot)])
    forward, pipeline = [], []
    for i in range(n + 2):  # two warm-up rounds
        start = time.perf_counter()
        model.predict_small(batch)
        mid = time.perf_counter()
        encode_png(to_cutout(shot, to_mask(model.predict_proba([shot])[0], model.threshold)))
        if i >= 2:
            forward.append(1000 * (mid - start))
            pipeline.append(1000 * (time.perf_counter() - mid))
    return {"forward_ms_p50": float(np.median(forward)), "pipeline_ms_p50": float(np.median(pipeline))}


def main() -> None:
    from garmentseg import evaluation
    from garmentseg import prepare as prep
    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import in_precision, load_cutout_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.profile)
    fp32 = load_cutout_model(args.model_uri, cfg.tracking_uri)
    half = in_precision(fp32, "bfloat16")
    frame, root = load_dataset(cfg, args.dataset)
    rows = frame if args.split == "all" else frame[frame["split"] == args.split]
    shot, _ = prep.read_pair(root, rows.iloc[0], cfg.serving.max_pixels)

    report: dict = {"model_uri": args.model_uri, "split": args.split, "n_images": len(rows)}
    for name, model in (("float32", fp32), ("bfloat16", half)):
        summary = evaluation.evaluate(model, frame, root, cfg, split=args.split).summary
        report[name] = {
            **timings(model, shot, args.n),
            "dice_median": summary["dice_median"],
            "dice_mean": summary["dice_mean"],
            "dice_p10": summary["dice_p10"],
        }
    f32, b16 = report["float32"], report["bfloat16"]
    report["forward_speedup"] = f32["forward_ms_p50"] / b16["forward_ms_p50"]
    report["pipeline_speedup"] = f32["pipeline_ms_p50"] / b16["pipeline_ms_p50"]
    report["dice_median_shift"] = b16["dice_median"] - f32["dice_median"]
    report["adopt_bf16"] = bool(
        report["pipeline_speedup"] > 1.0 and abs(report["dice_median_shift"]) < MAX_DICE_SHIFT
    )
    emit(report, args.json)


if __name__ == "__main__":
    main()

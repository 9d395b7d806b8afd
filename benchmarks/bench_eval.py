"""Evaluation throughput (images/s) at full resolution, and where the time goes.

    uv run python benchmarks/bench_eval.py [--profile demo] [--model-uri URI] [--dataset DIR]
                                           [--split test] [--flip-tta] [--json OUT]

Times, on the same rows: (1) decoding shot + cutout; (2) `CutoutModel.predict_proba` (preprocess, forward
pass, INTER_CUBIC upsampling); (3) `evaluation.evaluate` end to end (decode, predict, Dice/IoU/boundary
metrics, manual-cutout score, gallery). Without --model-uri an untrained model of the profile's size is
used: the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from garmentseg import evaluation
    from garmentseg import prepare as prep
    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import CutoutModel, load_cutout_model
    from garmentseg.model.unet import build_unet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--model-uri", default=None)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--flip-tta", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.profile)
    if args.model_uri:
        model = load_cutout_model(args.model_uri, cfg.tracking_uri)
    else:
        m = cfg.model
        model = CutoutModel(build_unet(m), (0.5,) * 3, (0.25,) * 3, 0.5, m.input_height, m.input_width)
    frame, root = load_dataset(cfg, args.dataset)
    rows = frame if args.split == "all" else frame[frame["split"] == args.split]
    model.predict_proba([prep.read_pair(root, rows.iloc[0], cfg.validation.max_pixels)[0]])  # warm up

    start = time.perf_counter()
    images = [prep.read_pair(root, row, cfg.validation.max_pixels)[0] for _, row in rows.iterrows()]
    t_decode = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(images), model.batch_size):
        model.predict_proba(images[i : i + model.batch_size], flip=args.flip_tta)
    t_predict = time.perf_counter() - start
    del images
    start = time.perf_counter()
    report = evaluation.evaluate(model, frame, root, cfg, split=args.split, flip=args.flip_tta)
    t_eval = time.perf_counter() - start
    n = len(rows)
    result = {
        "images": n,
        "size": f"{int(rows['width'].iloc[0])}x{int(rows['height'].iloc[0])}",
        "input": f"{model.input_height}x{model.input_width}",
        "flip_tta": args.flip_tta,
        "decode_images_per_s": n / t_decode,
        "predict_proba_images_per_s": n / t_predict,
        "evaluate_images_per_s": n / t_eval,
        "gallery_images": len(report.gallery),
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()

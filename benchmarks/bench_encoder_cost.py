"""What the pretrained encoders (VGG16 HED, EfficientNet-Lite0) cost against the from-scratch U-Net, in one run.

    uv run python benchmarks/bench_encoder_cost.py [--profiles demo cpu] [--steps 4] [--rounds 3] [--json OUT]

For each profile's model (demo: 192x128, cpu: 288x192) five variants are built as training builds them
(`model.build.build_and_compile`): encoder none (the profile's own U-Net), and each pretrained encoder
fine-tuned (encoder_trainable all) and frozen (none). Timed on random tensors, so only the model counts:
- train step per image: `train_on_batch` at the profile's batch size, after two untimed steps;
- predict per image: `predict_on_batch` of one image, as the `/cutout` endpoint calls the model.
The variants are timed in turn within each round and the median over rounds is kept, so a machine shared
with other jobs slows them alike; ratios are each variant over none.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _report import emit
from _timing import milliseconds

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = {
    "none": {},
    "vgg16_hed": {"encoder": "vgg16_hed"},
    "vgg16_hed_frozen": {"encoder": "vgg16_hed", "encoder_trainable": "none"},
    "efficientnet_lite0": {"encoder": "efficientnet_lite0"},
    "efficientnet_lite0_frozen": {"encoder": "efficientnet_lite0", "encoder_trainable": "none"},
}


def _seconds_per_call(fn, calls: int) -> float:
    return statistics.mean(milliseconds(fn, calls)) / 1000


def _profile_costs(profile: str, steps: int, rounds: int) -> dict:
    import numpy as np

    from garmentseg.config import load_config
    from garmentseg.model.build import build_and_compile

    models = {}
    for variant, model_overrides in VARIANTS.items():
        cfg = load_config(profile, overrides={"model": model_overrides})
        models[variant] = build_and_compile(cfg)
    h, w, bs = cfg.model.input_height, cfg.model.input_width, cfg.training.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (bs, h, w, 3)).astype(np.float32)
    y = (rng.random((bs, h, w, 1)) > 0.5).astype(np.float32)
    for model in models.values():  # trace and warm both paths before any timing
        for _ in range(2):
            model.train_on_batch(x, y)
            model.predict_on_batch(x[:1])
    train = {v: [] for v in models}
    predict = {v: [] for v in models}
    for _ in range(rounds):
        for variant, model in models.items():
            train[variant].append(_seconds_per_call(lambda m=model: m.train_on_batch(x, y), steps) / bs)
            predict[variant].append(_seconds_per_call(lambda m=model: m.predict_on_batch(x[:1]), 4 * steps))
    costs = {
        variant: {
            "params": int(model.count_params()),
            "trainable_params": int(sum(int(np.prod(v.shape)) for v in model.trainable_weights)),
            "train_ms_per_image": 1000 * statistics.median(train[variant]),
            "predict_ms_per_image": 1000 * statistics.median(predict[variant]),
            "train_ms_per_image_rounds": [round(1000 * t, 1) for t in train[variant]],
            "predict_ms_per_image_rounds": [round(1000 * t, 1) for t in predict[variant]],
        }
        for variant, model in models.items()
    }
    base = costs["none"]
    ratios = {
        f"{variant}_over_none": {
            "train": costs[variant]["train_ms_per_image"] / base["train_ms_per_image"],
            "predict": costs[variant]["predict_ms_per_image"] / base["predict_ms_per_image"],
        }
        for variant in VARIANTS
        if variant != "none"
    }
    return {
        "input": f"{h}x{w}",
        "batch_size": bs,
        "base_filters": cfg.model.base_filters,
        **costs,
        **ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["demo", "cpu"])
    parser.add_argument("--steps", type=int, default=4, help="timed train steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    figures = {profile: _profile_costs(profile, args.steps, args.rounds) for profile in args.profiles}
    figures["cpus"] = os.cpu_count()
    figures["load_average"] = [round(v, 2) for v in os.getloadavg()]
    emit(figures, args.json)


if __name__ == "__main__":
    main()

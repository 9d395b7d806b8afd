"""Training input pipeline vs the bare model step, on the same model and cached tensors, in one run.

    uv run python benchmarks/bench_train.py [--profile demo] [--dataset DIR | --images 128] [--epochs 3]
                                            [--json OUT]

(1) pipeline: `model.fit` on training's tf.data pipeline (cache, shuffle, parallel augmentation, normalise,
prefetch) built from the prepared uint8 tensors; (2) bare: `model.fit` on one pre-normalised batch repeated,
so the input costs nothing and only the model step is timed. Both skip the first (tracing) epoch.
Target: pipeline overhead = pipeline time / bare time - 1 <= 10%.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _arrays(cfg, dataset: Path | None, images: int):
    import numpy as np

    from garmentseg import prepare as prep
    from garmentseg.data.index import load_dataset
    from garmentseg.training import input_normalisation

    if dataset is not None:
        frame, root = load_dataset(cfg, dataset)
        prepared = prep.prepare_for(cfg, frame, root)
        return prepared.splits["train"], *input_normalisation(cfg, prepared)
    rng = np.random.default_rng(0)
    h, w = cfg.model.input_height, cfg.model.input_width
    x = rng.integers(0, 256, (images, h, w, 3), dtype=np.uint8)
    y = (rng.random((images, h, w)) > 0.5).astype(np.uint8) * 255
    return (
        prep.SplitArrays(x, y, np.array(["g"] * images), np.array(["Front"] * images)),
        (0.5,) * 3,
        (0.25,) * 3,
    )


def _timed_fit(model, ds, epochs: int, steps: int) -> float:
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):  # noqa: ARG002 - Keras' hook signature
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # noqa: ARG002 - Keras' hook signature
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(ds, epochs=epochs + 1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return sum(timer.times[1:]) / epochs  # the first epoch traces the graph


def main() -> None:
    import numpy as np
    import tensorflow as tf

    from garmentseg.config import load_config
    from garmentseg.input_pipeline import make_dataset
    from garmentseg.model.build import build_and_compile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--images", type=int, default=128, help="random tensors when no --dataset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.profile)
    train, mean, std = _arrays(cfg, args.dataset, args.images)
    bs = cfg.training.batch_size
    steps = len(train) // bs
    pipeline = make_dataset(train, mean, std, bs, augment=cfg.training.augment, shuffle=True).repeat()
    xb = (train.x[:bs].astype(np.float32) / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    yb = train.y[:bs, ..., None].astype(np.float32) / 255
    bare = tf.data.Dataset.from_tensors((xb, yb)).repeat()

    model = build_and_compile(cfg)
    t_bare = _timed_fit(model, bare, args.epochs, steps)
    t_pipe = _timed_fit(model, pipeline, args.epochs, steps)
    result = {
        "profile": cfg.profile,
        "input": f"{cfg.model.input_height}x{cfg.model.input_width}",
        "arch": cfg.model.arch,
        "params": int(model.count_params()),
        "images_per_epoch": steps * bs,
        "bare_images_per_s": steps * bs / t_bare,
        "pipeline_images_per_s": steps * bs / t_pipe,
        "pipeline_overhead": t_pipe / t_bare - 1,
        "augment": cfg.training.augment.model_dump(),
        "cpus": os.cpu_count(),
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()

"""The gpu profile trained at size on Keras 3's JAX backend, then tuned and scored by the library (#19, item 5).

    KERAS_BACKEND=jax python benchmarks/bench_gpu_training.py train [--profile gpu] [--garments 300]
                                      [--unseen-garments 60] [--minutes 8] [--work DIR] [--out DIR]
    python benchmarks/bench_gpu_training.py score --weights DIR [--tuned DIR/figures.json] [--out DIR2]

For a GPU node with JAX (or torch) and no TensorFlow, where `garmentseg train` cannot run: its input
pipeline is tf.data and its run is logged to MLflow. Everything else is the library's. `train` renders a
synthetic studio (`data.synth.synthesize`, the profile's seed) and an unseen batch (seed 8, as in
docs/method.md), prepares the tensors (`prepare.prepare_for`: INTER_AREA to the profile's input), builds and
compiles the profile's model (`model.build.build_and_compile`: pretrained encoder, mixed precision, the
seed's loss and optimizer), and fits it with the training callbacks (`callbacks.fit_callbacks`: early
stopping, best checkpoint, schedule, time budget). The weights are written to `--out` in float32 chunks
small enough to come back from a lent machine. Then both modes score the same way: the refinement and
thresholds chosen on valid (`evaluation.choose_refinement`, the profile's candidates), then the test split
and the unseen batch at full resolution (`evaluation.evaluate`). `score` rebuilds the model from those
chunks on any backend (in float32: the chunks are float32 either way, and float16 is slow on a CPU), so
scoring can finish on a CPU when the lent machine's time runs out; `--tuned` takes the refinement and
threshold that `train` chose on valid from its figures instead of choosing again.

What differs from `garmentseg train`: batches come from numpy (horizontal flip only; the profile's HSV
jitter is tf.image code), each epoch drops its last partial batch (a new shape would make XLA compile
again), and one device replaces the profile's MirroredStrategy. Progress goes to stderr; the figures go
to `--out`/figures.json as each stage ends, so a run cut off keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _report import emit, save

UNSEEN_SEED = 8
CHUNK_BYTES = 14 * 2**20  # a lent machine returns files of at most 16 MiB


def configure(args: argparse.Namespace) -> Any:
    from garmentseg.config import load_config

    overrides = {
        "synth": {"garments": args.garments},
        "training": {"time_budget_minutes": args.minutes, "mixed_precision": args.mode == "train"},
        "validation": {"workers": os.cpu_count() or 1},
        "paths": {"state_dir": str(args.work / "state")},
    }
    return load_config(args.profile, overrides=overrides)


def render(cfg: Any, work: Path, garments: int, unseen_garments: int) -> tuple[Path, Path]:
    """The studio the model trains on and the batch it never sees, each rendered once per work folder."""
    from garmentseg.data.synth import synthesize

    folders = {}
    for name, count, seed in (("studio", garments, cfg.synth.seed), ("unseen", unseen_garments, UNSEEN_SEED)):
        folders[name] = folder = work / f"{name}-g{count}-s{seed}"
        if not (folder / "garments.csv").is_file():
            synthesize(folder, count, seed, cfg)
    return folders["studio"], folders["unseen"]


def batches(split: Any, mean: Any, std: Any, batch_size: int, *, hflip: bool, seed: int) -> Any:
    """uint8 tensors -> normalised float32 batches (inference.normalise, as served), shuffled each epoch
    when hflip (training), in numpy threads."""
    import keras

    from garmentseg.inference import normalise

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=min(8, os.cpu_count() or 1), max_queue_size=16)
            self.epoch = 0
            self.order = np.arange(len(split.x))
            self.on_epoch_end()

        def __len__(self) -> int:
            return len(self.order) // batch_size

        def on_epoch_end(self) -> None:
            if hflip:
                self.order = np.random.default_rng([seed, self.epoch]).permutation(len(split.x))
            self.epoch += 1

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            take = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            x = normalise(split.x[take], mean, std)
            y = split.y[take, ..., None].astype(np.float32) / 255.0
            if hflip:
                mirror = np.random.default_rng([seed, self.epoch, i]).random(len(take)) < 0.5
                x[mirror], y[mirror] = x[mirror, :, ::-1], y[mirror, :, ::-1]
            return x, y

    return Batches()


def fit(cfg: Any, prepared: Any, figures: dict[str, Any]) -> tuple[Any, tuple[tuple[float, ...], ...]]:
    """The profile's model fitted with training's callbacks; its figures go into `figures["training"]`."""
    import keras

    from garmentseg.callbacks import fit_callbacks
    from garmentseg.model.build import build_and_compile
    from garmentseg.training import input_normalisation

    keras.utils.set_random_seed(cfg.training.seed)
    tc = cfg.training
    mean, std = input_normalisation(cfg, prepared)
    model = build_and_compile(cfg)
    train = batches(prepared.splits["train"], mean, std, tc.batch_size, hflip=tc.augment.hflip, seed=tc.seed)
    valid = batches(prepared.splits["valid"], mean, std, tc.batch_size, hflip=False, seed=tc.seed)
    if not len(train) or not len(valid):
        raise SystemExit(
            f"need {tc.batch_size} shots in train and valid each: {dict(train=len(train), valid=len(valid))}"
        )
    epoch_seconds: list[float] = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook
            epoch_seconds.append(round(time.monotonic() - self.started, 2))

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best.weights.h5"
        callbacks = [*fit_callbacks(tc, best, "val_loss", log_to_mlflow=False), EpochClock()]
        history = model.fit(train, validation_data=valid, epochs=tc.epochs, callbacks=callbacks, verbose=2)
        if best.exists():
            model.load_weights(str(best))
    figures["training"] = {
        "backend": keras.backend.backend(),
        "policy": model.dtype_policy.name,
        "params": int(model.count_params()),
        "shots": {name: len(split) for name, split in prepared.splits.items()},
        "augment": "horizontal flip",
        "fit_minutes": round((time.monotonic() - started) / 60, 2),
        "epochs": len(epoch_seconds),
        "first_epoch_s": epoch_seconds[0],
        "epoch_s_median": float(np.median(epoch_seconds[1:] or epoch_seconds)),
        "best_val_loss": float(min(history.history["val_loss"])),
        "val_loss": [round(float(v), 5) for v in history.history["val_loss"]],
    }
    return model, (tuple(mean), tuple(std))


def save_weights(model: Any, mean: Any, std: Any, out: Path) -> None:
    """float32 weights in numbered .npz chunks under CHUNK_BYTES each, plus the input normalisation."""
    weights = [np.asarray(w, np.float32) for w in model.get_weights()]
    chunk: dict[str, np.ndarray] = {}
    size, part = 0, 0
    for i, w in enumerate(weights):
        if chunk and size + w.nbytes > CHUNK_BYTES:
            np.savez(out / f"weights-{part}.npz", **chunk)
            chunk, size, part = {}, 0, part + 1
        chunk[f"w{i:04d}"], size = w, size + w.nbytes
    np.savez(out / f"weights-{part}.npz", **chunk, mean=np.asarray(mean), std=np.asarray(std))


def load_weights(cfg: Any, folder: Path) -> tuple[Any, Any, Any]:
    from garmentseg.model.build import build_and_compile

    chunks = sorted(folder.glob("weights-*.npz"))
    if not chunks:
        raise SystemExit(f"{folder}: no weights-*.npz chunks here (`train --out` writes them)")
    arrays: dict[str, np.ndarray] = {}
    for path in chunks:
        arrays.update(np.load(path))
    model = build_and_compile(cfg)
    model.set_weights([arrays[k] for k in sorted(k for k in arrays if k.startswith("w"))])
    return model, tuple(arrays["mean"]), tuple(arrays["std"])


def score(
    cfg: Any, model: Any, mean: Any, std: Any, batches: tuple[Path, Path], figures: dict, out: Path
) -> None:
    """Refinement and thresholds chosen on valid (unless `figures` holds train's choice), then test and the
    unseen batch at full resolution, as `garmentseg train` tunes and `garmentseg evaluate` scores."""
    from garmentseg import evaluation
    from garmentseg.data.index import load_dataset
    from garmentseg.edges import Refinement, describe, parse
    from garmentseg.inference import CutoutModel

    keep = ("dice_median", "dice_mean", "dice_p10", "bf_score_median", "halo_median", "n")
    studio, unseen = batches
    frame, root = load_dataset(cfg, studio)
    # batch_size 1: one input shape, so XLA compiles the forward pass once
    cutout = CutoutModel(
        model, mean, std, 0.5, cfg.model.input_height, cfg.model.input_width, batch_size=1,
        refinement=Refinement.from_config(cfg.inference),
    )  # fmt: skip
    if "valid" not in figures:
        started = time.monotonic()
        chosen = evaluation.choose_refinement(cutout, frame, root, cfg)
        figures["valid"] = {
            "refinement": describe(chosen.refinement),
            "threshold": chosen.threshold.threshold,
            "candidates": chosen.candidates,
            "minutes": round((time.monotonic() - started) / 60, 2),
        }
        save(figures, out / "figures.json")
    valid = figures["valid"]
    cutout = replace(cutout, refinement=parse(valid["refinement"]), threshold=valid["threshold"])
    for name, (scored, scored_root, split) in {
        "test": (frame, root, "test"),
        "unseen": (*load_dataset(cfg, unseen), "all"),
    }.items():
        started = time.monotonic()
        summary = evaluation.evaluate(cutout, scored, scored_root, cfg, split=split, gallery=False).summary
        figures[name] = {k: summary[k] for k in keep} | {
            "minutes": round((time.monotonic() - started) / 60, 2)
        }
        save(figures, out / "figures.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["train", "score"])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--garments", type=int, default=300, help="studio garments (3 shots each)")
    parser.add_argument("--unseen-garments", type=int, default=60)
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="fit's time budget, the first epoch's compilation included"
    )
    parser.add_argument("--work", type=Path, default=Path("var/bench/gpu-training"))
    parser.add_argument("--out", type=Path, default=Path("var/bench/gpu-training/out"))
    parser.add_argument("--weights", type=Path, help="score: the folder `train` wrote its chunks to")
    parser.add_argument("--tuned", type=Path, help="score: train's figures.json, whose valid choice is kept")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = configure(args)
    figures: dict[str, Any] = {"profile": args.profile, "mode": args.mode, "argv": sys.argv[1:]}
    if args.mode == "score":  # the weights first: a wrong folder fails before minutes of rendering
        if args.weights is None:
            parser.error("score needs --weights")
        model, mean, std = load_weights(cfg, args.weights)
        if args.tuned:
            figures["valid"] = json.loads(args.tuned.read_text())["valid"] | {"from": str(args.tuned)}
    started = time.monotonic()
    studio, unseen = render(cfg, args.work, args.garments, args.unseen_garments)
    figures["render_minutes"] = round((time.monotonic() - started) / 60, 2)
    if args.mode == "train":
        from garmentseg.data.index import load_dataset
        from garmentseg.prepare import prepare_for

        started = time.monotonic()
        prepared = prepare_for(cfg, load_dataset(cfg, studio)[0], studio)
        figures["prepare_minutes"] = round((time.monotonic() - started) / 60, 2)
        model, (mean, std) = fit(cfg, prepared, figures)
        del prepared
        save_weights(model, mean, std, args.out)
        save(figures, args.out / "figures.json")
    score(cfg, model, mean, std, (studio, unseen), figures, args.out)
    emit(figures, args.out / "figures.json")


if __name__ == "__main__":
    main()

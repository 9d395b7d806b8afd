"""Train the seed's U-Net on cached tensors, tune it on validation, score test at full resolution, and log
the whole run (params, curves, metrics, report, model, lineage) to MLflow.

The recipe is the seed's: 0.5 * BCE + 2 * (1 - Dice), RMSprop at 3e-4, EarlyStopping on val loss
(patience, min_delta) with the best checkpoint kept, horizontal flip + mild colour jitter (shift / scale /
rotate cost the seed 0.7-1.2 Dice points, so they exist but are off), and the optional
plateau-then-declining cyclic learning rate.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from garmentseg import prepare as prep
from garmentseg.data import versioning
from garmentseg.data.index import load_dataset
from garmentseg.inference import CutoutModel, log_cutout_model

if TYPE_CHECKING:
    from garmentseg.config import AugmentConfig, Config
    from garmentseg.prepare import Prepared, SplitArrays

log = logging.getLogger(__name__)

# The seed's cyclic LR: plateau for 2 epochs at the mean, then triangles of half-period 10 epochs between
# 5e-5 and 5e-4 whose peak decays by 1.2 per cycle; scaled here with training.learning_rate / 3e-4.
CLR_PLATEAU, CLR_STEP, CLR_MIN, CLR_MAX, CLR_DECAY = 2, 10, 5e-5, 5e-4, 1.2
SEED_LR = 3e-4
# Above this, numpy arrays are streamed into tf.data instead of embedded (protobuf's 2 GB graph limit).
MAX_EMBEDDED_BYTES = 1 << 30


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)


def plateau_cyclic_lr(epoch: int, base_lr: float = SEED_LR) -> float:
    """The seed's plateau_then_decl_triangular_lr, scaled to base_lr."""
    scale = base_lr / SEED_LR
    lo, hi = CLR_MIN * scale, CLR_MAX * scale
    if epoch < CLR_PLATEAU:
        return (lo + hi) / 2
    cycle = math.floor(1 + epoch / (2 * CLR_STEP))
    x = abs(epoch / CLR_STEP - 2 * cycle + 1)
    return lo + (hi - lo) * max(0.0, 1 - x) / CLR_DECAY ** (cycle - 1)


def cosine_lr(progress: float, base_lr: float) -> float:
    """Half a cosine from base_lr down to 0 as training progresses from 0 to 1: with a fixed budget the last
    epochs refine at a small rate instead of bouncing at the starting one."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def training_progress(epochs: int, budget_minutes: float) -> Any:
    """epoch -> share of training done: of the planned epochs, or of the time budget when that runs out
    first (so a schedule still anneals on a slower machine)."""
    started = time.monotonic()

    def progress(epoch: int) -> float:
        done = epoch / epochs
        if budget_minutes:
            done = max(done, (time.monotonic() - started) / (budget_minutes * 60))
        return min(done, 1.0)

    return progress


def time_budget_callback(minutes: float) -> Any:
    """Stops fitting before an epoch that would end after `minutes` of wall clock (judged by the slowest
    epoch so far), so the best checkpoint is kept and evaluation still runs inside the budget."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.started = time.monotonic()
            self.slowest = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch_started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = time.monotonic()
            self.slowest = max(self.slowest, now - self.epoch_started)
            if now - self.started + self.slowest >= minutes * 60:
                log.info("time budget of %.0f min reached after epoch %d: stopping", minutes, epoch + 1)
                self.model.stop_training = True

    return TimeBudget()


def _augment_fn(aug: AugmentConfig):
    import tensorflow as tf
    from keras import ops

    def shift_scale_rotate(x: Any, y: Any) -> tuple[Any, Any]:
        h, w = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
        angle = tf.random.uniform([], -aug.rotate_limit_deg, aug.rotate_limit_deg) * math.pi / 180
        scale = 1.0 + tf.random.uniform([], -aug.scale_limit, aug.scale_limit)
        dx = tf.random.uniform([], -aug.shift_limit, aug.shift_limit) * w
        dy = tf.random.uniform([], -aug.shift_limit, aug.shift_limit) * h
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # output pixel -> input pixel: rotate/scale about the centre, then shift
        transform = tf.stack(
            [cos, -sin, cx - cos * cx + sin * cy - dx, sin, cos, cy - sin * cx - cos * cy - dy, 0.0, 0.0]
        )
        both = tf.concat([x, y], axis=-1)[None]
        moved = ops.image.affine_transform(both, transform[None], fill_mode="nearest")[0]
        return moved[..., :3], moved[..., 3:]

    def augment(x: Any, y: Any) -> tuple[Any, Any]:
        if aug.hflip:
            flip = tf.random.uniform([]) < 0.5
            x = tf.cond(flip, lambda: tf.image.flip_left_right(x), lambda: x)
            y = tf.cond(flip, lambda: tf.image.flip_left_right(y), lambda: y)
        if aug.hsv:
            x = tf.image.random_hue(x, aug.hue_delta)
            x = tf.image.random_saturation(x, 1 - aug.saturation_delta, 1 + aug.saturation_delta)
            x = tf.clip_by_value(tf.image.random_brightness(x, aug.value_delta), 0.0, 1.0)
        if aug.shift_scale_rotate:
            x, y = shift_scale_rotate(x, y)
        return x, y

    return augment


def make_dataset(
    arrays: SplitArrays,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
    *,
    augment: AugmentConfig | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    """uint8 tensors -> cached, shuffled, augmented (in parallel), normalised, batched, prefetched tf.data."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    x, y = arrays.x, arrays.y[..., None]
    if x.nbytes + y.nbytes < MAX_EMBEDDED_BYTES:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
    else:
        spec = (
            tf.TensorSpec(x.shape[1:], tf.uint8),
            tf.TensorSpec(y.shape[1:], tf.uint8),
        )
        ds = tf.data.Dataset.from_generator(lambda: zip(x, y, strict=True), output_signature=spec)
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def to_float(xi: Any, yi: Any) -> tuple[Any, Any]:
        return tf.cast(xi, tf.float32) / 255.0, tf.cast(yi, tf.float32) / 255.0

    ds = ds.map(to_float, num_parallel_calls=autotune)
    if augment is not None and (augment.hflip or augment.hsv or augment.shift_scale_rotate):
        ds = ds.map(_augment_fn(augment), num_parallel_calls=autotune)
    m, s = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
    ds = ds.batch(batch_size).map(lambda xb, yb: ((xb - m) / s, yb), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def make_optimizer(name: str, learning_rate: float) -> Any:
    import keras

    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)  # the seed's SGD setting
    raise ValueError(f"training.optimizer={name!r} is not one of rmsprop, adam, sgd")


def build_and_compile(cfg: Config) -> Any:
    """The configured U-Net, compiled with the seed's loss and optimizer (under the distribution strategy
    and dtype policy the config asks for)."""
    import keras

    from garmentseg.model.losses import dice_coeff, make_loss
    from garmentseg.model.unet import build_unet

    loss_cfg = cfg.training.loss
    previous = keras.mixed_precision.global_policy().name
    if cfg.training.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_unet(cfg.model)
        model.compile(
            optimizer=make_optimizer(cfg.training.optimizer, cfg.training.learning_rate),
            loss=make_loss(loss_cfg.w_bce, loss_cfg.w_dice, loss_cfg.w_boundary, loss_cfg.pos_weight),
            metrics=[dice_coeff],
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def _strategy(cfg: Config) -> Any:
    import tensorflow as tf

    if cfg.training.distribute:
        strategy = tf.distribute.MirroredStrategy()
        log.info("MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def mlflow_epoch_logger() -> Any:
    """A Keras callback logging every epoch's metrics (and learning rate) to the active MLflow run."""
    import keras
    import mlflow

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(float(v))}
            mlflow.log_metrics(metrics, step=epoch)

    return MlflowEpochLogger()


def fit(cfg: Config, prepared: Prepared, *, log_to_mlflow: bool = True) -> tuple[Any, dict[str, list[float]]]:
    """Train with EarlyStopping and best-by-val-loss checkpoint; returns the best model and its history."""
    import keras

    keras.utils.set_random_seed(cfg.training.seed)
    tc = cfg.training
    has_valid = len(prepared.splits["valid"]) > 0
    monitor = "val_loss" if has_valid else "loss"
    with _strategy(cfg).scope():
        model = build_and_compile(cfg)
    train_ds = make_dataset(
        prepared.splits["train"],
        prepared.mean,
        prepared.std,
        tc.batch_size,
        augment=tc.augment,
        shuffle=True,
        seed=tc.seed,
    )
    valid_ds = (
        make_dataset(prepared.splits["valid"], prepared.mean, prepared.std, tc.batch_size)
        if has_valid
        else None
    )
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best.weights.h5"
        callbacks: list[Any] = [
            keras.callbacks.EarlyStopping(
                monitor=monitor, patience=tc.early_stopping.patience, min_delta=tc.early_stopping.min_delta
            ),
            keras.callbacks.ModelCheckpoint(
                str(best), monitor=monitor, save_best_only=True, save_weights_only=True
            ),
        ]
        if tc.lr_schedule == "plateau_cyclic":
            callbacks.append(
                keras.callbacks.LearningRateScheduler(lambda e: plateau_cyclic_lr(e, tc.learning_rate))
            )
        elif tc.lr_schedule == "cosine":
            progress = training_progress(tc.epochs, tc.time_budget_minutes)
            callbacks.append(
                keras.callbacks.LearningRateScheduler(lambda e: cosine_lr(progress(e), tc.learning_rate))
            )
        if tc.time_budget_minutes:
            callbacks.append(time_budget_callback(tc.time_budget_minutes))
        if log_to_mlflow:
            callbacks.append(mlflow_epoch_logger())
        history = model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=tc.epochs,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        if best.exists():
            model.load_weights(str(best))
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def ensure_experiment(cfg: Config) -> str:
    """Point MLflow at cfg.tracking_uri and return the experiment id, creating the experiment (with the
    embedded artifact root when tracking is local) if it is missing."""
    import mlflow

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        artifacts = cfg.path(cfg.registry.artifact_root)
        artifacts.mkdir(parents=True, exist_ok=True)
        location = artifacts.resolve().as_uri()
    return mlflow.create_experiment(cfg.registry.experiment, artifact_location=location)


def _plot_curves(history: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "dice_coeff"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(history[prefix + key], style, label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _headline(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """Flat numeric metrics of an evaluation summary, slices as <prefix>dice_median_view_Front etc."""
    echoes = {"threshold", "flag_threshold", "bf_tolerance_px", "manual_cutout_target_dice", "flip_tta"}
    out = {
        f"{prefix}{k}": float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in echoes
    }
    for kind, groups in summary.get("slices", {}).items():
        for name, stats in groups.items():
            out[f"{prefix}dice_median_{kind}_{name}"] = float(stats["dice_median"])
    return {k: v for k, v in out.items() if np.isfinite(v)}


def train_on_frame(
    cfg: Config,
    frame: pd.DataFrame,
    root: Path,
    *,
    source: str | None = None,
    out_dir: Path | None = None,
    dvc_dataset: bool = False,
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """The whole training run for an index already loaded: prepare, fit, tune, evaluate, log."""
    import mlflow

    from garmentseg import evaluation

    started = time.monotonic()
    prepared = prep.prepare_for(cfg, frame, root)
    prepare_seconds = time.monotonic() - started
    experiment_id = ensure_experiment(cfg)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(cfg.flat())
        version = versioning.data_version(cfg, None if dvc_dataset else frame)
        mlflow.set_tags(
            {
                "git_commit": versioning.git_commit(cfg.root),
                "data_version": version,
                "index_hash": prepared.index_hash,
                "profile": cfg.profile,
                "input_size": f"{prepared.input_height}x{prepared.input_width}",
                **(extra_tags or {}),
            }
        )
        dataset = mlflow.data.from_pandas(frame, source=source or str(root), name="garmentseg-index")
        mlflow.log_input(dataset, context="training")

        fit_started = time.monotonic()
        model, history = fit(cfg, prepared)
        fit_seconds = time.monotonic() - fit_started

        cutout = CutoutModel(
            model,
            prepared.mean,
            prepared.std,
            0.5,
            prepared.input_height,
            prepared.input_width,
            flip_tta=cfg.evaluation.flip_tta,
            batch_size=cfg.training.batch_size,
        )
        choice = evaluation.tune_threshold(cutout, frame, root, cfg)
        cutout.threshold, cutout.flag_threshold = choice.threshold, choice.flag_threshold
        report = evaluation.evaluate(cutout, frame, root, cfg, split="test")

        metrics = {
            **_headline(report.summary, "test_"),
            "valid_dice_median": choice.valid_summary.get("dice_median", float("nan")),
            "valid_dice_mean": choice.valid_summary.get("dice_mean", float("nan")),
            "threshold": choice.threshold,
            "flag_threshold": choice.flag_threshold,
            "epochs_trained": float(len(history.get("loss", []))),
            "prepare_seconds": prepare_seconds,
            "fit_seconds": fit_seconds,
            "train_seconds": time.monotonic() - started,
        }
        if "val_loss" in history:
            metrics["best_val_loss"] = float(min(history["val_loss"]))
        metrics = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
        mlflow.log_metrics(metrics)

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir) if out_dir else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            write_training_outputs(folder, history, choice, metrics)
            evaluation.write_report(report, folder / "evaluation")
            mlflow.log_artifacts(str(folder))

        model_uri = log_cutout_model(
            model,
            mean=prepared.mean,
            std=prepared.std,
            threshold=choice.threshold,
            flag_threshold=choice.flag_threshold,
            input_height=prepared.input_height,
            input_width=prepared.input_width,
            extra={
                "arch": cfg.model.arch,
                "base_filters": cfg.model.base_filters,
                "depth": cfg.model.depth,
                "block": cfg.model.block,
                "attention": cfg.model.attention,
                "index_hash": prepared.index_hash,
                "data_version": version,
            },
        )
        if out_dir:
            (Path(out_dir) / "model_uri.txt").write_text(model_uri + "\n")
        log.info(
            "run %s: test Dice median %.4f (threshold %.2f) in %.0fs -> %s",
            run.info.run_id,
            metrics.get("test_dice_median", float("nan")),
            choice.threshold,
            metrics["train_seconds"],
            model_uri,
        )
        return TrainResult(run.info.run_id, model_uri, metrics, history)


def write_training_outputs(folder: Path, history: dict[str, list[float]], choice: Any, metrics: dict) -> None:
    """Curves (PNG + CSV for DVC plots), the threshold sweep and metrics.json."""
    table = pd.DataFrame(history)
    table.insert(0, "epoch", range(len(table)))
    table.to_csv(folder / "history.csv", index=False)
    _plot_curves(history, folder / "curves.png")
    pd.DataFrame(
        {
            "threshold": list(choice.dice_median_by_threshold),
            "valid_dice_median": list(choice.dice_median_by_threshold.values()),
        }
    ).to_csv(folder / "threshold_sweep.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))


def train(
    cfg: Config,
    dataset_path: Path | None = None,
    out_dir: Path | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train on the DVC dataset (cfg.paths.data_dir) or on any contract folder / data dir given."""
    frame, root = load_dataset(cfg, dataset_path)
    source = str(Path(dataset_path).resolve()) if dataset_path else str(cfg.path(cfg.paths.data_dir))
    return train_on_frame(
        cfg,
        frame,
        root,
        source=source,
        out_dir=out_dir,
        dvc_dataset=dataset_path is None,
        extra_tags=extra_tags,
    )

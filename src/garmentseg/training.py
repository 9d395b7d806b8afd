"""Train the seed's U-Net on cached tensors, tune it on validation, score test at full resolution, and log
the whole run (params, curves, metrics, report, model, lineage) to MLflow; `garmentseg train` at the bottom.

The recipe is the seed's: 0.5 * BCE + 2 * (1 - Dice), RMSprop at 3e-4, EarlyStopping on val loss
(patience, min_delta) with the best checkpoint kept (callbacks.py), horizontal flip + mild colour jitter
(input_pipeline.py), and the optional plateau-then-declining cyclic learning rate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import pandas as pd

from garmentseg import prepare as prep
from garmentseg.callbacks import fit_callbacks
from garmentseg.cliopts import config_options, dataset_option
from garmentseg.config import load_config
from garmentseg.data import plane
from garmentseg.data.index import load_dataset
from garmentseg.edges import Refinement, describe
from garmentseg.inference import CutoutModel, log_cutout_model
from garmentseg.input_pipeline import make_dataset
from garmentseg.labels.screen import drop_excluded, log_screening
from garmentseg.model.build import build_and_compile

if TYPE_CHECKING:
    from garmentseg.config import Config
    from garmentseg.prepare import Prepared

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)


def input_normalisation(cfg: Config, prepared: Prepared) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) the model trains and serves with: a pretrained encoder's own input statistics, else
    the training split's (the seed's rule)."""
    from garmentseg.model.encoders import encoder_normalisation

    return encoder_normalisation(cfg.model.encoder) or (prepared.mean, prepared.std)


def encoder_tags(cfg: Config) -> dict[str, str]:
    """The encoder and, when pretrained, its weights' package, licence and sha256, for the MLflow run."""
    from garmentseg.model.encoders import encoder_source

    source = encoder_source(cfg.model.encoder)
    return source.tags() if source else {"encoder": "none"}


def _strategy(cfg: Config) -> Any:
    import tensorflow as tf

    if cfg.training.distribute:
        strategy = tf.distribute.MirroredStrategy()
        log.info("MirroredStrategy over %d replicas", strategy.num_replicas_in_sync)
        return strategy
    return tf.distribute.get_strategy()


def fit(cfg: Config, prepared: Prepared, *, log_to_mlflow: bool = True) -> tuple[Any, dict[str, list[float]]]:
    """Train with EarlyStopping and best-by-val-loss checkpoint; returns the best model and its history."""
    import keras

    keras.utils.set_random_seed(cfg.training.seed)
    tc = cfg.training
    has_valid = len(prepared.splits["valid"]) > 0
    monitor = "val_loss" if has_valid else "loss"
    with _strategy(cfg).scope():
        model = build_and_compile(cfg)
    mean, std = input_normalisation(cfg, prepared)
    train_ds = make_dataset(
        prepared.splits["train"],
        mean,
        std,
        tc.batch_size,
        augment=tc.augment,
        shuffle=True,
        seed=tc.seed,
    )
    valid_ds = make_dataset(prepared.splits["valid"], mean, std, tc.batch_size) if has_valid else None
    with tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best.weights.h5"
        callbacks = fit_callbacks(tc, best, monitor, log_to_mlflow=log_to_mlflow)
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
    """Flat numeric metrics of an evaluation summary, slices' medians as <prefix>dice_median_view_Front,
    <prefix>halo_median_view_Front etc."""
    echoes = {
        "threshold",
        "flag_threshold",
        "bf_tolerance_px",
        "halo_band_px",
        "manual_cutout_target_dice",
        "flip_tta",
    }
    out = {
        f"{prefix}{k}": float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in echoes
    }
    for kind, groups in summary.get("slices", {}).items():
        for name, stats in groups.items():
            for stat, value in stats.items():
                if stat.endswith("_median"):
                    out[f"{prefix}{stat}_{kind}_{name}"] = float(value)
    return {k: v for k, v in out.items() if np.isfinite(v)}


class NotTrainable(ValueError):
    """A dataset no model can be trained and judged on; said before any minute of training is spent."""


def check_splits(frame: pd.DataFrame, source: str) -> None:
    """Train and test each need a garment: the model learns on one and is judged on the other (the gate reads
    test). Without valid, training watches its own loss and tunes on train."""
    sizes = {split: int((frame["split"] == split).sum()) for split in prep.SPLITS}
    if not (sizes["train"] and sizes["test"]):
        counts = ", ".join(f"{split} {n}" for split, n in sizes.items())
        raise NotTrainable(
            f"{source}: pairs per split {counts}; training needs train and test (splits are by garment, "
            f"data.splits in params.yaml): deliver more garments"
        )


def check_has_garment(prepared: prep.Prepared, source: str) -> None:
    """Masks that are all background train a model that answers 'nothing' and scores Dice 1 on them."""
    for split in ("train", "test"):
        if not prepared.splits[split].y.any():
            raise NotTrainable(f"{source}: every {split} mask is empty (all background); no garment to learn")


def train_on_frame(
    cfg: Config,
    frame: pd.DataFrame,
    root: Path,
    *,
    source: str | None = None,
    out_dir: Path | None = None,
    dvc_dataset: bool = False,
    extra_tags: dict[str, str] | None = None,
    screening: dict[str, Any] | None = None,
) -> TrainResult:
    """The whole training run for an index already loaded: prepare, fit, tune, evaluate, log. `screening`
    (the retrain's label audit: `labels.screen.Screening.summary()`) leaves its excluded pairs out and is
    recorded on the run."""
    import mlflow

    from garmentseg import evaluation

    if screening:
        frame = drop_excluded(frame, screening["exclusions"])
    named = source or str(root)
    check_splits(frame, named)
    started = time.monotonic()
    prepared = prep.prepare_for(cfg, frame, root)
    prepare_seconds = time.monotonic() - started
    check_has_garment(prepared, named)
    experiment_id = ensure_experiment(cfg)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(cfg.flat())
        lineage = plane.lineage(cfg, None if dvc_dataset else frame)  # commit, data version, state, DVC md5s
        version = lineage["data_version"]
        encoder = encoder_tags(cfg)  # also inside the logged model: where its weights came from
        mlflow.set_tags(
            {
                **lineage,
                "index_hash": prepared.index_hash,
                "profile": cfg.profile,
                "input_size": f"{prepared.input_height}x{prepared.input_width}",
                **encoder,
                **(extra_tags or {}),
            }
        )
        dataset = mlflow.data.from_pandas(frame, source=source or str(root), name="garmentseg-index")
        mlflow.log_input(dataset, context="training")
        mlflow.set_tag("dataset_digest", dataset.digest)
        with (
            tempfile.TemporaryDirectory() as tmp
        ):  # the pairs it trains on: a later audit marks them in-sample
            frame.to_parquet(Path(tmp) / "index.parquet", index=False)
            mlflow.log_artifact(str(Path(tmp) / "index.parquet"), "data")
        if screening:
            log_screening(screening["exclusions"], screening.get("report"))

        fit_started = time.monotonic()
        model, history = fit(cfg, prepared)
        fit_seconds = time.monotonic() - fit_started

        mean, std = input_normalisation(cfg, prepared)
        cutout = CutoutModel(
            model,
            mean,
            std,
            0.5,
            prepared.input_height,
            prepared.input_width,
            flip_tta=cfg.evaluation.flip_tta,
            batch_size=cfg.training.batch_size,
            refinement=Refinement.from_config(cfg.inference),
        )
        chosen = evaluation.choose_refinement(cutout, frame, root, cfg)
        choice = chosen.threshold
        cutout.refinement = chosen.refinement
        mlflow.set_tag("refinement", describe(chosen.refinement))
        cutout.threshold, cutout.flag_threshold = choice.threshold, choice.flag_threshold
        cutout.quality = choice.quality
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
            if chosen.candidates:  # the refinements tried on valid, and which one the model keeps
                pd.DataFrame(chosen.candidates).to_csv(folder / "refinement_choice.csv", index=False)
            if choice.quality is not None:  # also inside the logged model, where inference reads it
                (folder / "quality_estimate.json").write_text(json.dumps(choice.quality.to_dict(), indent=2))
            evaluation.write_report(report, folder / "evaluation")
            mlflow.log_artifacts(str(folder))

        model_uri = log_cutout_model(
            model,
            mean=mean,
            std=std,
            threshold=choice.threshold,
            flag_threshold=choice.flag_threshold,
            quality=choice.quality,
            refinement=cutout.refinement,
            input_height=prepared.input_height,
            input_width=prepared.input_width,
            extra={
                "arch": cfg.model.arch,
                "base_filters": cfg.model.base_filters,
                "depth": cfg.model.depth,
                "block": cfg.model.block,
                "attention": cfg.model.attention,
                **encoder,
                "encoder_trainable": cfg.model.encoder_trainable,
                "encoder_lr_scale": cfg.model.encoder_lr_scale,
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
    screening: dict[str, Any] | None = None,
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
        screening=screening,
    )


@click.command("train")
@config_options
@dataset_option
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write curves, metrics and report here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: run_id, model_uri, metrics.")
def train_cmd(
    profile: str | None, params: str | None, dataset: Path | None, out: Path | None, as_json: bool
) -> None:
    """Train the U-Net, tune it on valid, score test at full resolution, log it all to MLflow."""
    from garmentseg.evaluation import finite

    # Keras prints its epoch lines on stdout; keep stdout for the result (a URI or one JSON object)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = train(load_config(profile, params), dataset, out_dir=out)
        except NotTrainable as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        payload = {"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics}
        click.echo(json.dumps(finite(payload), indent=2, sort_keys=True))
    else:
        click.echo(result.model_uri)

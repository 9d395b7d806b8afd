"""How fast training learns and when it stops: the learning-rate schedules and the Keras callbacks `fit` uses
(early stopping and the best checkpoint by val loss, the schedule, the wall-clock budget, MLflow epoch logs).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from garmentseg.config import TrainingConfig

log = logging.getLogger(__name__)

# The seed's cyclic LR: plateau for 2 epochs at the mean, then triangles of half-period 10 epochs between
# 5e-5 and 5e-4 whose peak decays by 1.2 per cycle; scaled here with training.learning_rate / 3e-4.
CLR_PLATEAU, CLR_STEP, CLR_MIN, CLR_MAX, CLR_DECAY = 2, 10, 5e-5, 5e-4, 1.2
SEED_LR = 3e-4


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


def training_progress(epochs: int, budget_minutes: float) -> Callable[[int], float]:
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
    """Stops fitting before an epoch that would end after `minutes` of wall clock, so the best checkpoint is
    kept and evaluation still runs inside the budget. The next epoch is judged by the slowest one after the
    first, and the first without its first step: that step compiles the model (XLA on a GPU: minutes,
    docs/method.md), and taking it as an epoch's length would end training after one or two epochs."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        async_safe = True  # its batch hook reads the clock only: Keras may keep dispatching steps ahead

        def on_train_begin(self, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook signature
            self.started = time.monotonic()
            self.first_step_ended: float | None = None
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook signature
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook signature
            if self.first_step_ended is None:
                self.first_step_ended = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: ARG002 - Keras' hook signature
            now = time.monotonic()
            compiled = self.first_step_ended if not self.durations else None
            self.durations.append(now - (compiled or self.epoch_started))
            next_epoch = max(self.durations[1:] or self.durations)
            if now - self.started + next_epoch >= minutes * 60:
                log.info("time budget of %.0f min reached after epoch %d: stopping", minutes, epoch + 1)
                self.model.stop_training = True

    return TimeBudget()


def mlflow_epoch_logger() -> Any:
    """A Keras callback logging every epoch's metrics (and learning rate) to the active MLflow run."""
    import keras
    import mlflow

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items() if np.isfinite(float(v))}
            mlflow.log_metrics(metrics, step=epoch)

    return MlflowEpochLogger()


def fit_callbacks(tc: TrainingConfig, best: Path, monitor: str, *, log_to_mlflow: bool) -> list[Any]:
    """EarlyStopping on `monitor` (patience, min_delta), the best weights kept in `best`, then the configured
    learning-rate schedule, time budget and MLflow epoch logging."""
    import keras

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
    return callbacks

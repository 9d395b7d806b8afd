"""The learning-rate schedules (the seed's plateau-then-declining cycle, cosine) and the wall-clock budget."""

from __future__ import annotations

import itertools
import types

import pytest

from garmentseg import callbacks
from garmentseg.callbacks import cosine_lr, plateau_cyclic_lr, time_budget_callback, training_progress


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 2.75e-4), (1, 2.75e-4), (10, 5e-4), (20, 5e-5), (30, 5e-5 + 4.5e-4 / 1.2)],
)
def test_plateau_then_declining_cyclic_lr_matches_the_seed(epoch, expected):
    assert plateau_cyclic_lr(epoch) == pytest.approx(expected)
    assert plateau_cyclic_lr(epoch, 6e-4) == pytest.approx(2 * expected)


def test_cosine_lr_falls_from_the_base_rate_to_zero_as_training_progresses():
    rates = [cosine_lr(p / 10, 1e-3) for p in range(12)]
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(5e-4)
    assert all(a > b for a, b in itertools.pairwise(rates[:11]))
    assert rates[10] == rates[11] == pytest.approx(0.0, abs=1e-12)


def _fake_clock(monkeypatch, monotonic) -> None:
    """The callbacks module's clock only: patching time.monotonic itself would also feed other threads
    (fsspec's event loop reads it) and exhaust a scripted clock."""
    monkeypatch.setattr(callbacks, "time", types.SimpleNamespace(monotonic=monotonic))


def test_progress_follows_the_time_budget_when_it_runs_out_before_the_epochs(monkeypatch):
    now = [0.0]
    _fake_clock(monkeypatch, lambda: now[0])
    by_epochs, by_time = training_progress(40, 0), training_progress(40, 10.0)
    now[0] = 300.0  # 5 of 10 minutes gone at epoch 4 of 40
    assert by_epochs(4) == pytest.approx(0.1)
    assert by_time(4) == pytest.approx(0.5)
    now[0] = 900.0
    assert by_time(4) == 1.0


def test_time_budget_stops_before_an_epoch_would_overrun(monkeypatch):
    clock = iter([0.0, 0.0, 40.0, 40.0, 80.0, 80.0, 120.0])  # train begin, then epoch begin / end pairs
    _fake_clock(monkeypatch, lambda: next(clock))

    class Model:
        stop_training = False

    budget = time_budget_callback(2.0)  # 120 s; epochs take 40 s
    budget.set_model(Model())
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    budget.on_epoch_end(0)
    assert not budget.model.stop_training  # 40 s used, the next epoch ends at 80 s
    budget.on_epoch_begin(1)
    budget.on_epoch_end(1)
    assert budget.model.stop_training  # 80 s used: a third epoch would end at 120 s, on the budget


def test_time_budget_does_not_take_the_compiling_first_step_as_an_epoch(monkeypatch):
    # XLA on a GPU: the first step compiles for 130 s, an epoch's steps take 10-20 s; the budget is 3 min.
    # Clock reads: train begin, epoch begin, first step end, epoch end, then epoch begin / end pairs.
    clock = iter([0.0, 0.0, 130.0, 140.0, 140.0, 150.0, 150.0, 170.0])
    _fake_clock(monkeypatch, lambda: next(clock))

    class Model:
        stop_training = False

    budget = time_budget_callback(3.0)
    budget.set_model(Model())
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    budget.on_train_batch_end(0)
    budget.on_epoch_end(0)
    assert not budget.model.stop_training  # 140 s used; the epoch without its compiling step took 10 s
    budget.on_epoch_begin(1)
    budget.on_epoch_end(1)
    assert not budget.model.stop_training  # 150 s used, the next epoch ends near 160 s
    budget.on_epoch_begin(2)
    budget.on_epoch_end(2)
    assert budget.model.stop_training  # 170 s used: an epoch as slow as this 20 s one would end at 190 s


@pytest.mark.parametrize(
    ("schedule", "budget", "log_to_mlflow", "expected"),
    [
        ("constant", 0, False, ["EarlyStopping", "ModelCheckpoint"]),
        ("cosine", 10.0, False, ["EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "TimeBudget"]),
        (
            "plateau_cyclic",
            0,
            True,
            ["EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "MlflowEpochLogger"],
        ),
    ],
)
def test_fit_callbacks_follow_the_training_config(cfg, tmp_path, schedule, budget, log_to_mlflow, expected):
    tc = cfg.training.model_copy(update={"lr_schedule": schedule, "time_budget_minutes": budget})
    found = callbacks.fit_callbacks(tc, tmp_path / "best.weights.h5", "val_loss", log_to_mlflow=log_to_mlflow)
    assert [type(c).__name__ for c in found] == expected
    stopping = found[0]
    assert (stopping.monitor, stopping.patience) == ("val_loss", tc.early_stopping.patience)
    if schedule != "constant":
        assert found[2].schedule(0) == pytest.approx(
            tc.learning_rate if schedule == "cosine" else plateau_cyclic_lr(0, tc.learning_rate)
        )

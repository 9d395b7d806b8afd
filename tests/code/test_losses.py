"""The seed's loss and dice coefficient, the boundary term, the learning-rate schedules and the time budget."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from garmentseg.model.losses import boundary_band, dice_coeff, make_loss
from garmentseg.training import cosine_lr, plateau_cyclic_lr, time_budget_callback, training_progress


def _mask() -> np.ndarray:
    y = np.zeros((2, 16, 16, 1), np.float32)
    y[:, 4:12, 4:12] = 1.0
    return y


def test_dice_coeff_is_the_seeds_smoothed_formula():
    y = _mask()
    p = np.full_like(y, 0.5)
    s = float(y.sum())
    expected = (2 * 0.5 * s + 1) / (s + 0.5 * y.size + 1)
    assert float(dice_coeff(y, p)) == pytest.approx(expected, rel=1e-5)
    assert float(dice_coeff(y, y)) == pytest.approx(1.0)


def test_loss_is_zero_for_a_perfect_mask_and_matches_weights_for_a_coin_flip():
    y = _mask()
    loss = make_loss(0.5, 2.0)
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-4)
    p = np.full_like(y, 0.5)
    expected = 0.5 * math.log(2) + 2.0 * (1 - float(dice_coeff(y, p)))
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-4)
    assert float(make_loss(1.0, 0.0)(y, p)) == pytest.approx(math.log(2), rel=1e-4)


def test_boundary_term_adds_only_where_edges_are_wrong():
    y = _mask()
    band = np.asarray(boundary_band(y))
    assert band[0, 8, 8, 0] == 0 and band[0, 0, 0, 0] == 0 and band[0, 4, 8, 0] == 1
    blurred_edge = y.copy()
    blurred_edge[:, 3:5, 3:13] = 0.5  # wrong only near the top edge
    plain, weighted = make_loss(0.5, 2.0, 0.0), make_loss(0.5, 2.0, 1.0)
    assert float(weighted(y, blurred_edge)) > float(plain(y, blurred_edge)) + 0.1
    assert float(weighted(y, y)) == pytest.approx(float(plain(y, y)), abs=1e-4)


def test_pos_weight_scales_only_the_garment_pixels_share_of_the_bce():
    y = _mask()
    p = np.full_like(y, 0.25)  # under-confident everywhere: garment pixels cost -log(0.25)
    share = float(y.mean())
    garment, background = -math.log(0.25), -math.log(0.75)
    for weight in (1.0, 3.0):
        expected = weight * share * garment + (1 - share) * background
        assert float(make_loss(1.0, 0.0, pos_weight=weight)(y, p)) == pytest.approx(expected, rel=1e-4)
    assert float(make_loss(0.5, 2.0, pos_weight=4.0)(y, y)) == pytest.approx(0.0, abs=1e-4)


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


def test_progress_follows_the_time_budget_when_it_runs_out_before_the_epochs(monkeypatch):
    import garmentseg.training as training

    now = [0.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: now[0])
    by_epochs, by_time = training_progress(40, 0), training_progress(40, 10.0)
    now[0] = 300.0  # 5 of 10 minutes gone at epoch 4 of 40
    assert by_epochs(4) == pytest.approx(0.1)
    assert by_time(4) == pytest.approx(0.5)
    now[0] = 900.0
    assert by_time(4) == 1.0


def test_time_budget_stops_before_an_epoch_would_overrun(monkeypatch):
    import garmentseg.training as training

    clock = iter([0.0, 0.0, 40.0, 40.0, 80.0, 80.0, 120.0])  # train begin, then epoch begin / end pairs
    monkeypatch.setattr(training.time, "monotonic", lambda: next(clock))

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

"""The seed's loss and dice coefficient, the boundary term and the garment-weighted BCE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from garmentseg.model.losses import boundary_band, dice_coeff, make_loss


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

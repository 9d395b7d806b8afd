"""Mask metrics on hand-made masks, the seed's summaries, and the two threshold searches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from garmentseg.model import metrics as M


def square(size: int = 100, top: int = 30, left: int = 30, side: int = 40) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_dice_and_iou_on_hand_made_masks():
    truth = square(side=40)  # 1600 px
    pred = square(side=20)  # 400 px, inside the truth
    assert M.dice(pred, truth) == pytest.approx(2 * 400 / 2000)
    assert M.iou(pred, truth) == pytest.approx(400 / 1600)
    assert M.dice(truth, truth) == M.iou(truth, truth) == 1.0
    assert M.dice(square(top=0, left=0, side=10), square(top=50, left=50, side=10)) == 0.0


def test_two_empty_masks_agree_and_one_empty_scores_zero():
    empty = np.zeros((20, 20), bool)
    assert M.dice(empty, empty) == M.iou(empty, empty) == 1.0
    assert M.dice(empty, square(20, 5, 5, 5)) == 0.0
    assert M.boundary_iou(empty, empty) == 1.0
    assert M.boundary_f_score(empty, square(20, 5, 5, 5)) == 0.0


def test_boundary_iou_is_one_for_identical_masks_and_drops_faster_than_iou_for_a_shift():
    truth = square(size=200, top=50, left=50, side=100)
    shifted = np.roll(truth, 4, axis=1)
    assert M.boundary_iou(truth, truth, 0.02) == 1.0
    iou, biou = M.iou(shifted, truth), M.boundary_iou(shifted, truth, 0.005)
    assert 0 < biou < iou < 1  # edges are where the shift shows; the interior hides it from plain IoU


def test_boundary_iou_band_width_follows_the_diagonal():
    # 0.005 x diagonal(200x200) = 1.41 px band; 0.02 -> 5.66 px: a wider band forgives a 2-px shift more
    truth = square(size=200, top=50, left=50, side=100)
    shifted = np.roll(truth, 2, axis=0)
    assert M.boundary_iou(shifted, truth, 0.005) < M.boundary_iou(shifted, truth, 0.02)
    assert M.boundary_width((200, 200), 0.02) == pytest.approx(0.02 * math.hypot(200, 200))
    assert (
        M.boundary_iou_key(0.005) == "boundary_iou_0p5pct" and M.boundary_iou_key(0.02) == "boundary_iou_2pct"
    )


def test_boundary_f_score_within_and_beyond_tolerance():
    truth = square(size=120, top=30, left=30, side=60)
    assert M.boundary_f_score(truth, truth, 2) == 1.0
    assert M.boundary_f_score(np.roll(truth, 1, axis=1), truth, 2) == 1.0  # 1 px off, 2 px allowed
    far = M.boundary_f_score(np.roll(truth, 6, axis=1), truth, 2)
    assert 0.3 < far < 0.8  # the vertical edges miss, the horizontal ones still match
    assert M.boundary_f_score(np.roll(truth, 6, axis=1), truth, 6) == 1.0


def test_mask_scores_match_the_single_metric_functions():
    truth = square(size=90, top=20, left=25, side=40)
    pred = np.roll(truth, (3, -2), axis=(0, 1))
    scores = M.mask_scores(pred, truth, (0.02, 0.005), 2)
    assert scores["dice"] == M.dice(pred, truth)
    assert scores["iou"] == M.iou(pred, truth)
    assert scores["boundary_iou_2pct"] == M.boundary_iou(pred, truth, 0.02)
    assert scores["bf_score"] == M.boundary_f_score(pred, truth, 2)


def test_summary_and_outlier_correction_follow_the_stated_rule():
    scores = [0.99, 0.992, 0.991, 0.989, 0.993, 0.5]
    summary = M.summarise(scores, "dice_")
    assert summary["dice_n"] == 6 and summary["dice_min"] == 0.5
    assert summary["dice_median"] == pytest.approx(0.9905)
    q1, q3 = np.percentile(scores, [25, 75])
    corrected = M.outlier_corrected(scores, k=1.5)
    assert corrected["outlier_floor"] == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert corrected["outliers_removed"] == 1
    assert corrected["outlier_corrected_mean"] == pytest.approx(np.mean(scores[:5]))


def test_best_threshold_prefers_median_then_mean_then_closeness_to_half():
    assert M.best_threshold({0.3: [0.9, 0.9, 0.9], 0.5: [0.8, 0.95, 0.95], 0.7: [0.9, 0.91, 0.7]}) == 0.5
    assert M.best_threshold({0.4: [0.9, 0.9], 0.6: [0.9, 0.9]}) in (0.4, 0.6)
    assert M.best_threshold({0.45: [0.9], 0.5: [0.9], 0.7: [0.9]}) == 0.5
    with pytest.raises(ValueError, match="threshold_grid"):
        M.best_threshold({})


def test_flag_threshold_catches_bad_cutouts_and_reports_precision_recall():
    scores = [1.0, 2.0, 3.0, 8.0, 9.0]
    bad = [False, False, False, True, True]
    t = M.best_flag_threshold(scores, bad)
    assert 3.0 < t <= 8.0
    pr = M.flag_precision_recall(scores, bad, t)
    assert pr["flag_precision"] == 1.0 and pr["flag_recall"] == 1.0 and pr["flagged_share"] == 0.4
    # nothing bad on validation: flag only what is more doubtful than every validation image
    assert M.best_flag_threshold([1.0, 2.0], [False, False]) > 2.0
    assert math.isnan(M.flag_precision_recall([1.0], [False], 5.0)["flag_precision"])


def test_halo_is_the_share_of_backdrop_in_the_cutouts_inner_edge_band():
    truth = square(size=100, top=30, left=30, side=40)
    assert M.halo(truth, truth, 4) == 0.0
    # one pixel too wide on every side: the band (4 px inside the predicted outline) holds a 1-px rim of
    # backdrop; band area = 42^2 - 34^2, backdrop in it = 42^2 - 40^2
    dilated = square(size=100, top=29, left=29, side=42)
    assert M.halo(dilated, truth, 4) == pytest.approx((42**2 - 40**2) / (42**2 - 34**2))
    assert M.halo(dilated, truth, 2) > M.halo(dilated, truth, 4)  # a narrower band: the rim weighs more
    assert M.halo(square(size=100, top=32, left=32, side=36), truth, 4) == 0.0  # too tight: no backdrop
    assert math.isnan(M.halo(np.zeros((100, 100), bool), truth))


def test_halo_does_not_count_the_frame_as_the_cutouts_edge():
    truth = np.zeros((60, 60), bool)
    truth[20:, 10:50] = True  # a hem that runs off the bottom of the frame
    wide = np.zeros((60, 60), bool)
    wide[19:, 9:51] = True  # 1 px of backdrop on the top and the sides
    # band = rows 19..59 x cols 9..50 less rows 23..59 x cols 13..46: the bottom is no edge
    assert M.halo(wide, truth, 4) == pytest.approx((41 * 42 - 40 * 40) / (41 * 42 - 37 * 34))
    assert M.mask_scores(wide, truth, (0.02,), 2, 4)["halo"] == M.halo(wide, truth, 4)

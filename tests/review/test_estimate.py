"""The Dice estimate: fitted on probability maps whose true Dice is known, it ranks unseen ones, meets its
policy on the data it was calibrated on, and survives the trip through the model's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from garmentseg.config import load_config
from garmentseg.model.metrics import dice
from garmentseg.review import estimate as Q


def _case(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A garment-like blob and a probability map with a random amount of doubt and damage: (prob, Dice)."""
    import cv2

    h, w = 96, 64
    truth = np.zeros((h, w), np.uint8)
    cv2.ellipse(truth, (32, 48), (18, 34), 0, 0, 360, 1, -1)
    damage = rng.uniform(0, 1)
    prob = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 0.5 + 3 * damage)
    if damage > 0.5:  # a low-contrast patch the model half-misses
        y, x = rng.integers(20, 70), rng.integers(14, 40)
        prob[y : y + 16, x : x + 12] *= rng.uniform(0.3, 0.8)
    prob = np.clip(prob + rng.normal(0, 0.05 + 0.2 * damage, prob.shape), 0, 1).astype(np.float32)
    return prob, dice(prob >= 0.5, truth)


def _cases(seed: int, n: int) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed)
    probs, scores = zip(*(_case(rng) for _ in range(n)), strict=True)
    return list(probs), list(scores)


def _review(**policy: float):
    return load_config("demo", overrides={"review": {"target_dice": 0.95, **policy}}).review


def test_the_estimate_ranks_unseen_cutouts_and_keeps_its_recall() -> None:
    review = _review(target_recall=0.9, budget_share=None)
    probs, truth_dice = _cases(0, 80)
    quality = Q.calibrate([Q.quality_features(p, 0.5) for p in probs], truth_dice, review)
    fresh, fresh_dice = _cases(1, 80)
    estimates = [quality.estimate(p, 0.5) for p in fresh]
    assert all(0.0 <= e <= 1.0 for e in estimates)
    figures = Q.review_metrics(estimates, fresh_dice, quality)
    assert 0 < figures["below_target_share"] < 1
    assert figures["review_auroc"] >= 0.9
    assert abs(np.corrcoef(estimates, fresh_dice)[0, 1]) > 0.8
    calibrated = [quality.estimate(p, 0.5) for p in probs]
    assert Q.review_metrics(calibrated, truth_dice, quality)["review_recall"] >= 0.85


def test_a_budget_policy_reviews_about_its_share() -> None:
    probs, truth_dice = _cases(2, 60)
    quality = Q.calibrate(
        [Q.quality_features(p, 0.5) for p in probs],
        truth_dice,
        _review(budget_share=0.25, target_recall=None),
    )
    estimates = [quality.estimate(p, 0.5) for p in _cases(3, 200)[0]]
    assert quality.policy == "budget_share=0.25"
    assert 0.1 <= np.mean([quality.needs_review(e) for e in estimates]) <= 0.4


def test_an_empty_mask_is_estimated_zero_and_always_reviewed() -> None:
    probs, truth_dice = _cases(4, 30)
    quality = Q.calibrate([Q.quality_features(p, 0.5) for p in probs], truth_dice, _review(target_recall=0.9))
    empty = np.zeros((96, 64), np.float32)
    assert quality.estimate(empty, 0.5) == 0.0 and quality.needs_review(0.0)


def test_the_estimate_round_trips_through_json_and_refuses_other_features() -> None:
    probs, truth_dice = _cases(5, 30)
    quality = Q.calibrate([Q.quality_features(p, 0.5) for p in probs], truth_dice, _review(target_recall=0.9))
    again = Q.QualityEstimate.from_dict(json.loads(json.dumps(quality.to_dict())))
    assert again == quality
    with pytest.raises(ValueError, match="fitted on features"):
        Q.QualityEstimate.from_dict({**quality.to_dict(), "features": ["area_share"]})


def test_too_few_validation_cutouts_is_a_clear_error() -> None:
    probs, truth_dice = _cases(6, 3)
    with pytest.raises(ValueError, match="3 usable validation cutouts"):
        Q.calibrate([Q.quality_features(p, 0.5) for p in probs], truth_dice, _review(target_recall=0.9))

"""The Dice estimate: fitted on probability maps whose true Dice is known, it ranks unseen ones, meets its
policy on the data it was calibrated on, and survives the trip through the model's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from garmentseg.config import load_config
from garmentseg.model.metrics import dice
from garmentseg.review import estimate as Q

SIZE = (96, 64)  # the maps' own size: read as they are


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
    quality = Q.calibrate([Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, review, SIZE)
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
        [Q.quality_features(p, 0.5, SIZE) for p in probs],
        truth_dice,
        _review(budget_share=0.25, target_recall=None),
        SIZE,
    )
    estimates = [quality.estimate(p, 0.5) for p in _cases(3, 200)[0]]
    assert quality.policy == "budget_share=0.25"
    assert 0.1 <= np.mean([quality.needs_review(e) for e in estimates]) <= 0.4


def test_an_empty_mask_is_estimated_zero_and_always_reviewed() -> None:
    probs, truth_dice = _cases(4, 30)
    quality = Q.calibrate(
        [Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, _review(target_recall=0.9), SIZE
    )
    empty = np.zeros((96, 64), np.float32)
    assert quality.estimate(empty, 0.5) == 0.0 and quality.needs_review(0.0)


def test_the_estimate_round_trips_through_json_and_refuses_other_features() -> None:
    probs, truth_dice = _cases(5, 30)
    quality = Q.calibrate(
        [Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, _review(target_recall=0.9), SIZE
    )
    again = Q.QualityEstimate.from_dict(json.loads(json.dumps(quality.to_dict())))
    assert again == quality
    with pytest.raises(ValueError, match="fitted on features"):
        Q.QualityEstimate.from_dict({**quality.to_dict(), "features": ["area_share"]})
    earlier = {k: v for k, v in quality.to_dict().items() if k != "map_size"}
    with pytest.raises(ValueError, match="full-resolution maps"):
        Q.QualityEstimate.from_dict(earlier)


def test_a_map_at_any_resolution_is_read_at_the_model_size() -> None:
    """The shot's full-resolution map and the same map at the model's size give one estimate: a street photo
    and a studio shot are measured alike."""
    import cv2

    probs, truth_dice = _cases(7, 40)
    quality = Q.calibrate([Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, _review(), SIZE)
    for prob in _cases(8, 10)[0]:
        large = cv2.resize(prob, (SIZE[1] * 4, SIZE[0] * 4), interpolation=cv2.INTER_NEAREST)
        assert quality.estimate(large, 0.5) == pytest.approx(quality.estimate(prob, 0.5), abs=1e-6)


def test_too_few_validation_cutouts_is_a_clear_error() -> None:
    probs, truth_dice = _cases(6, 3)
    with pytest.raises(ValueError, match="3 usable validation cutouts"):
        Q.calibrate(
            [Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, _review(target_recall=0.9), SIZE
        )


def test_a_model_whose_estimate_this_code_cannot_read_still_loads_without_one(caplog) -> None:
    """An older champion (its estimate read on full-resolution maps) keeps serving; its review falls back to
    the needs-manual-cutout flag until a retrain calibrates a new estimate."""
    from garmentseg.inference import QUALITY_KEY, read_quality_estimate

    probs, truth_dice = _cases(9, 30)
    quality = Q.calibrate([Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, _review(), SIZE)
    assert read_quality_estimate({QUALITY_KEY: quality.to_dict()}, "models:/m-now") == quality
    earlier = {k: v for k, v in quality.to_dict().items() if k != "map_size"}
    with caplog.at_level("WARNING", logger="garmentseg.inference"):
        assert read_quality_estimate({QUALITY_KEY: earlier}, "models:/m-earlier") is None
    assert "models:/m-earlier" in caplog.text and "re-train" in caplog.text
    assert read_quality_estimate({}, "models:/m-none") is None


def test_the_estimate_reads_the_map_its_profile_names_and_remembers_it() -> None:
    """review.estimate_map model: the estimate is fitted on, and reads, the model's own map, not the refined
    one the cutout is made of; the choice travels with it, and an estimate stored before the choice existed
    reads the refined map as it always did."""
    from garmentseg.inference import QUALITY_KEY, Maps, read_quality_estimate

    probs, truth_dice = _cases(10, 40)
    review = _review().model_copy(update={"estimate_map": "model"})
    quality = Q.calibrate([Q.quality_features(p, 0.5, SIZE) for p in probs], truth_dice, review, SIZE)
    assert quality.reads == "model"
    own, refined = _cases(11, 2)[0]
    maps = Maps(small=own, prob=refined)
    assert quality.estimate(quality.map_of(maps), 0.5) == quality.estimate(own, 0.5)
    assert quality.estimate(own, 0.5) != quality.estimate(refined, 0.5)
    assert read_quality_estimate({QUALITY_KEY: quality.to_dict()}, "models:/m-own") == quality
    stored = {k: v for k, v in quality.to_dict().items() if k != "reads"}
    assert read_quality_estimate({QUALITY_KEY: stored}, "models:/m-before").map_of(maps) is refined
    with pytest.raises(ValueError, match="estimate_map"):
        _review().model_validate({**_review().model_dump(), "estimate_map": "sharpened"})


def test_the_ridge_strength_is_chosen_among_those_given_and_recorded() -> None:
    review = _review(target_recall=0.9, budget_share=None)
    probs, truth_dice = _cases(5, 60)
    features = [Q.quality_features(p, 0.5, SIZE) for p in probs]
    shipped = Q.calibrate(features, truth_dice, review, SIZE)
    assert shipped.ridge_alpha == Q.RIDGE_ALPHAS[0] == 1.0
    strengths = (0.01, 1.0, 1e6)
    chosen = Q.calibrate(features, truth_dice, review, SIZE, alphas=strengths)
    assert chosen.ridge_alpha in strengths and chosen.ridge_alpha != 1e6, (
        "a ridge that flattens every estimate"
    )
    crushed = Q.calibrate(features, truth_dice, review, SIZE, alphas=(1e6,))
    assert np.abs(crushed.coef).max() < 0.01 * np.abs(shipped.coef).max()
    stored = {k: v for k, v in shipped.to_dict().items() if k != "ridge_alpha"}  # logged before the field
    assert Q.QualityEstimate.from_dict(stored).ridge_alpha == 1.0

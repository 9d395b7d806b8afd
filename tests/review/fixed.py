"""A QualityEstimate with fixed numbers, for tests of what carries and acts on it (not of its fit)."""

from __future__ import annotations

from garmentseg.review.estimate import FEATURES, QualityEstimate

# log(1 - Dice) of every non-empty cutout under the fixed estimate: 1.005 - e^-3 ~ 0.955.
LOG_ERROR = -3.0


def fixed_quality(
    review_below: float, target_dice: float = 0.97, map_size: tuple[int, int] = (192, 128)
) -> QualityEstimate:
    """Estimates ~0.955 for every non-empty mask (0 for an empty one); review at or below `review_below`."""
    n = len(FEATURES)
    return QualityEstimate(
        mean=(0.0,) * n,
        scale=(1.0,) * n,
        coef=(0.0,) * n,
        intercept=LOG_ERROR,
        review_below=review_below,
        target_dice=target_dice,
        policy="target_recall=0.9",
        fitted_on=10,
        below_target=3,
        map_size=map_size,
    )

"""A per-cutout estimate of its Dice, from the probability map alone, and the review policy's threshold.

Why an estimate of Dice rather than a score: a retoucher's target is a Dice ("below 0.97 needs a person"),
and a budget or a recall is stated over cutouts below that target. The estimate is a ridge regression of
log(1 - Dice) on a handful of shape-free features of the probability map, fitted at training time on the
validation split's predictions, and the review threshold is set there too (on cross-validated estimates,
so it is not tuned on the very fit it judges). Both travel inside the logged model as plain numbers, so
one `/cutout` call is judged alone, with a dot product, and inference needs no scikit-learn.

The features are read at the model's input size (INTER_AREA), whatever the shot's size: a street photo and
a studio shot are then measured alike, and it costs a millisecond where the full-resolution map cost ~25 ms
of each `/cutout`. Which map they read is the profile's `review.estimate_map`: the refined one the cutout
is made of (the studio: AUROC 0.962 against 0.942 on the model's own map), or the model's own before
refinement (the street photos, where the refinement sharpens away the doubt the features measure: 0.79-0.90
against 0.73-0.86 on four models); docs/real-photos.md#the-review-estimate,
benchmarks/bench_review_features.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from garmentseg.config import EstimateMap
from garmentseg.inference import EMPTY_MASK_SHARE, UNCERTAIN_HIGH, UNCERTAIN_LOW, manual_cutout_score

if TYPE_CHECKING:
    from garmentseg.config import ReviewConfig
    from garmentseg.inference import Maps

FEATURES = (
    "log_band",  # log(1 + the old needs-manual-cutout score): width of the uncertain band along the edge
    "log_uncertain_share",  # uncertain pixels over the mask's area
    "edge_entropy",  # mean binary entropy in a band around the predicted edge (1 % of the diagonal)
    "mask_confidence",  # mean probability inside the mask
    "area_share",  # the mask's share of the frame
    "log_fragments",  # log(1 + connected components beyond the largest)
)
# 1 - Dice is regressed in log space; this floor keeps a perfect cutout finite.
ERROR_FLOOR = 0.005
# The ridge's strength, or the strengths it is chosen among by leave-one-out on the validation cutouts. One,
# fixed: 0.1-1000 and the leave-one-out choice rank alike on the street photos, and a strong ridge costs the
# studio (docs/real-photos.md, "The ridge's strength").
RIDGE_ALPHAS: tuple[float, ...] = (1.0,)
EDGE_BAND_SHARE = 0.01
CV_FOLDS = 5
# Which probability map the features may read (review.estimate_map): the refined one the cutout is made of,
# or the model's own before refinement. An estimate stored before the choice existed read the refined one.
ESTIMATE_MAPS = get_args(EstimateMap)


def read_map(maps: Maps, which: str) -> np.ndarray:
    """The map of one shot's Maps that an estimate reading `which` (one of ESTIMATE_MAPS) reads."""
    return maps.small if which == "model" else maps.prob


def at_size(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The probability map at `size` (height, width): shrunk with INTER_AREA, as the model's input is."""
    import cv2

    prob = np.asarray(prob, np.float32)
    if prob.shape[:2] == tuple(size):
        return prob
    return cv2.resize(prob, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def quality_features(prob: np.ndarray, threshold: float, size: tuple[int, int]) -> np.ndarray | None:
    """The FEATURES of one probability map, read at `size` (the model's input size); None for a (nearly)
    empty mask."""
    import cv2

    prob = at_size(prob, size)
    mask = prob >= threshold
    area = int(np.count_nonzero(mask))
    if area < EMPTY_MASK_SHARE * mask.size:
        return None
    uncertain = np.count_nonzero((prob > UNCERTAIN_LOW) & (prob < UNCERTAIN_HIGH))
    binary = mask.astype(np.uint8)
    radius = max(1, round(EDGE_BAND_SHARE * math.hypot(*prob.shape[:2])))
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)  # square: separable, fast
    band = (cv2.dilate(binary, kernel) - cv2.erode(binary, kernel)).astype(bool)
    p = np.clip(prob[band], 1e-6, 1 - 1e-6)
    entropy = float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))) if p.size else 0.0
    count, _ = cv2.connectedComponents(binary, connectivity=8)
    return np.array(
        [
            math.log1p(manual_cutout_score(prob, threshold)),
            math.log(uncertain / area + 1e-4),
            entropy,
            float(prob[mask].mean()),
            area / mask.size,
            math.log1p(max(count - 2, 0)),
        ],
        np.float64,
    )


@dataclass(frozen=True)
class QualityEstimate:
    """A fitted Dice estimate and the threshold under which a cutout goes to review."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    review_below: float  # needs review when the estimate is at or below this
    target_dice: float
    policy: str  # "target_recall=0.9" or "budget_share=0.2", as calibrated
    fitted_on: int  # validation cutouts the fit saw
    below_target: int  # of which below target_dice
    map_size: tuple[int, int]  # (height, width) the features are read at: the model's input size
    reads: str = "refined"  # which map the features read: one of ESTIMATE_MAPS
    ridge_alpha: float = 1.0  # the ridge's strength, as chosen on the validation cutouts

    def map_of(self, maps: Maps) -> np.ndarray:
        """The map of one shot's Maps this estimate reads."""
        return read_map(maps, self.reads)

    def estimate(self, prob: np.ndarray, threshold: float) -> float:
        """The estimated Dice of the mask `prob >= threshold`; 0 for an empty mask (a shot has a garment)."""
        features = quality_features(prob, threshold, self.map_size)
        return 0.0 if features is None else self.from_features(features)

    def from_features(self, features: np.ndarray) -> float:
        z = (np.asarray(features) - self.mean) / self.scale
        log_error = float(np.dot(z, self.coef) + self.intercept)
        return float(np.clip(1.0 + ERROR_FLOOR - math.exp(log_error), 0.0, 1.0))

    def needs_review(self, estimate: float) -> bool:
        return estimate <= self.review_below

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityEstimate:
        """Rebuild from to_dict(); refuses an estimate fitted on other features than this code computes, or
        on the full-resolution map (an estimate logged before the features were read at the model's size)."""
        if tuple(data.get("features", ())) != FEATURES:
            raise ValueError(
                f"quality estimate fitted on features {data.get('features')}, this code has {FEATURES}"
            )
        if "map_size" not in data:
            raise ValueError(
                "quality estimate fitted on full-resolution maps; this code reads them at the model's size"
            )
        fields = {k: v for k, v in data.items() if k != "features"}
        for key in ("mean", "scale", "coef"):
            fields[key] = tuple(float(v) for v in fields[key])
        fields["map_size"] = tuple(int(v) for v in fields["map_size"])
        if fields.setdefault("reads", "refined") not in ESTIMATE_MAPS:
            raise ValueError(f"quality estimate reads map {fields['reads']!r}, not one of {ESTIMATE_MAPS}")
        return cls(**fields)


def policy_threshold(estimates: Sequence[float], dice: Sequence[float], review: ReviewConfig) -> float:
    """The estimate threshold that meets the review policy on these (validation) cutouts."""
    est = np.asarray(estimates, np.float64)
    if review.budget_share is not None:
        return float(np.quantile(est, review.budget_share, method="lower"))
    below = np.sort(est[np.asarray(dice) < review.target_dice])
    if below.size == 0:  # no cutout below target to aim a recall at: flag estimates below the target
        return review.target_dice
    needed = math.ceil(review.target_recall * below.size)
    return float(below[needed - 1])


def ridge_regression(alphas: Sequence[float] = RIDGE_ALPHAS):
    """The estimate's regression: a ridge whose strength is chosen among `alphas` by leave-one-out (one
    strength: that one)."""
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=np.asarray(alphas, np.float64))


def calibrate(
    features: Sequence[np.ndarray | None],
    dice: Sequence[float],
    review: ReviewConfig,
    map_size: tuple[int, int],
    alphas: Sequence[float] = RIDGE_ALPHAS,
) -> QualityEstimate:
    """Fit the estimate to the true Dice of validation cutouts (features read at `map_size` on the map
    `review.estimate_map` names) and set the policy's threshold there."""
    from sklearn.model_selection import KFold, cross_val_predict

    usable = [i for i, f in enumerate(features) if f is not None]
    if len(usable) < CV_FOLDS:
        raise ValueError(
            f"{len(usable)} usable validation cutouts; the quality estimate needs at least {CV_FOLDS}"
        )
    x = np.stack([features[i] for i in usable])
    y = np.log(1.0 - np.asarray([dice[i] for i in usable]) + ERROR_FLOOR)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    ridge = ridge_regression(alphas).fit(z, y)
    folds = KFold(CV_FOLDS, shuffle=True, random_state=0)
    held_out = cross_val_predict(ridge_regression(alphas), z, y, cv=folds)
    cv_estimates = np.clip(1.0 + ERROR_FLOOR - np.exp(held_out), 0.0, 1.0)
    all_estimates = np.zeros(len(features))  # empty masks estimate 0: always reviewed
    all_estimates[usable] = cv_estimates
    policy = (
        f"budget_share={review.budget_share:g}"
        if review.budget_share is not None
        else f"target_recall={review.target_recall:g}"
    )
    return QualityEstimate(
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        coef=tuple(ridge.coef_.tolist()),
        intercept=float(ridge.intercept_),
        review_below=policy_threshold(all_estimates, dice, review),
        target_dice=review.target_dice,
        policy=policy,
        fitted_on=len(usable),
        below_target=int(np.sum(np.asarray(dice) < review.target_dice)),
        map_size=(int(map_size[0]), int(map_size[1])),
        reads=review.estimate_map,
        ridge_alpha=float(ridge.alpha_),
    )


def review_metrics(
    estimates: Sequence[float], dice: Sequence[float], quality: QualityEstimate
) -> dict[str, float]:
    """How well the estimate catches cutouts below target: AUROC, and precision / recall / share reviewed at
    the calibrated threshold (NaN where undefined)."""
    est = np.asarray(estimates, np.float64)
    below = np.asarray(dice, np.float64) < quality.target_dice
    flagged = est <= quality.review_below
    caught = int(np.sum(flagged & below))
    out = {
        "review_auroc": auroc(-est, below),
        "review_precision": caught / flagged.sum() if flagged.any() else float("nan"),
        "review_recall": caught / below.sum() if below.any() else float("nan"),
        "review_share": float(flagged.mean()) if est.size else float("nan"),
        "below_target_share": float(below.mean()) if est.size else float("nan"),
    }
    return {k: float(v) for k, v in out.items()}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive); NaN with one class only."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, scores))

"""Mask metrics at full resolution, in numpy: Dice, IoU, boundary IoU, boundary F-score, halo, summaries.

Masks are boolean (or anything where > 0 means garment). Two empty masks agree perfectly (score 1.0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _bool(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩T| / (|P| + |T|)."""
    p, t = _bool(pred), _bool(truth)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(p & t)) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |P∪T|."""
    p, t = _bool(pred), _bool(truth)
    union = int(np.count_nonzero(p | t))
    return 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union


def _inner_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest non-mask pixel; outside the frame counts as
    background, as in Cheng et al.'s reference code (the image border is a boundary)."""
    import cv2

    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def boundary_width(shape: Sequence[int], fraction: float) -> float:
    """Cheng et al.'s band width: a fraction of the image diagonal, at least one pixel."""
    return max(1.0, fraction * float(np.hypot(shape[0], shape[1])))


def boundary_iou(pred: np.ndarray, truth: np.ndarray, fraction: float = 0.02) -> float:
    """Boundary IoU (Cheng et al., CVPR 2021): IoU of the two masks' inner contour bands of width
    fraction x diagonal; sensitive to edge quality where mask IoU is dominated by the garment's interior."""
    return mask_scores(pred, truth, (fraction,))[boundary_iou_key(fraction)]


def boundary_f_score(pred: np.ndarray, truth: np.ndarray, tolerance_px: float = 2.0) -> float:
    """Boundary F-measure (Perazzi et al., DAVIS 2016): precision = share of predicted contour pixels within
    tolerance_px of the true contour, recall = the converse; F = 2PR / (P + R)."""
    return mask_scores(pred, truth, (), tolerance_px)["bf_score"]


def halo(pred: np.ndarray, truth: np.ndarray, band_px: float = 4.0) -> float:
    """Share of the cutout's inner edge band that is backdrop in the truth (docs/method.md); NaN for an
    empty prediction. The band: predicted pixels within band_px (Euclidean) of a pixel outside the
    prediction, inside the frame (the frame's edge is not the cutout's edge)."""
    import cv2

    p, t = _bool(pred), _bool(truth)
    if not p.any():
        return float("nan")
    size = 2 * int(np.floor(band_px)) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    # erode's default border is +inf: pixels beyond the frame never erode the mask
    band = p & (cv2.erode(p.astype(np.uint8), disc) == 0)
    n = int(np.count_nonzero(band))
    return 0.0 if n == 0 else int(np.count_nonzero(band & ~t)) / n


def summarise(values: Iterable[float], prefix: str = "") -> dict[str, float]:
    """n, mean, median, std, p10, min of a score list (NaN-free), keys prefixed."""
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if v.size == 0:
        return {f"{prefix}n": 0}
    return {
        f"{prefix}n": int(v.size),
        f"{prefix}mean": float(v.mean()),
        f"{prefix}median": float(np.median(v)),
        f"{prefix}std": float(v.std()),
        f"{prefix}p10": float(np.percentile(v, 10)),
        f"{prefix}min": float(v.min()),
    }


def outlier_floor(values: Sequence[float], k: float = 1.5) -> float:
    """The seed's outlier rule, made explicit: a score below Q1 - k * IQR is an outlier."""
    v = np.asarray(values, np.float64)
    q1, q3 = np.percentile(v, [25, 75])
    return float(q1 - k * (q3 - q1))


def outlier_corrected(values: Sequence[float], k: float = 1.5) -> dict[str, float]:
    """Mean and median after dropping low outliers (Q1 - k * IQR), and how many were dropped."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"outlier_floor": float("nan"), "outliers_removed": 0}
    floor = outlier_floor(v, k)
    kept = v[v >= floor]
    return {
        "outlier_floor": floor,
        "outliers_removed": int(v.size - kept.size),
        "outlier_corrected_mean": float(kept.mean()),
        "outlier_corrected_median": float(np.median(kept)),
    }


def best_threshold(dice_by_threshold: dict[float, Sequence[float]]) -> float:
    """The grid threshold with the highest median Dice (the headline), ties broken by mean Dice, then by
    closeness to 0.5."""

    def key(t: float) -> tuple[float, float, float]:
        scores = np.asarray(dice_by_threshold[t], np.float64)
        return float(np.median(scores)), float(scores.mean()), -abs(t - 0.5)

    if not dice_by_threshold:
        raise ValueError("threshold search needs at least one threshold in evaluation.threshold_grid")
    return max(dice_by_threshold, key=key)


def best_flag_threshold(scores: Sequence[float], needs_person: Sequence[bool], beta: float = 2.0) -> float:
    """The manual-cutout score threshold (flag when score >= threshold) maximising F-beta on validation.

    beta=2 weighs recall over precision: a bad cutout that slips through costs a customer-facing defect, an
    extra look costs a retoucher a minute. With no bad cutout in validation, flag only what is more doubtful
    than every validation image.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(needs_person, bool)
    if s.size == 0:
        raise ValueError("flag threshold search needs at least one validation image")
    if not y.any():
        return float(np.nextafter(s.max(), np.inf))
    best, best_f = float(s.max()), -1.0
    for t in np.unique(s):
        flagged = s >= t
        tp = int(np.count_nonzero(flagged & y))
        precision = tp / max(int(flagged.sum()), 1)
        recall = tp / int(y.sum())
        if precision + recall == 0:
            continue
        f = (1 + beta**2) * precision * recall / (beta**2 * precision + recall)
        if f > best_f:
            best, best_f = float(t), f
    return best


def flag_precision_recall(scores: Sequence[float], needs_person: Sequence[bool], threshold: float) -> dict:
    """Precision and recall of `score >= threshold` for catching images that need a person (NaN if undefined)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(needs_person, bool)
    flagged = s >= threshold
    tp = int(np.count_nonzero(flagged & y))
    return {
        "flagged_share": float(flagged.mean()) if s.size else float("nan"),
        "flag_precision": tp / int(flagged.sum()) if flagged.any() else float("nan"),
        "flag_recall": tp / int(y.sum()) if y.any() else float("nan"),
        "needs_person_share": float(y.mean()) if s.size else float("nan"),
    }


def mask_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    fractions: Sequence[float] = (0.02, 0.005),
    tolerance_px: float = 2.0,
    halo_band_px: float = 4.0,
) -> dict[str, float]:
    """Dice, IoU, boundary IoU at each diagonal fraction, boundary F-score (sharing distance transforms)
    and halo."""
    import cv2

    p, t = _bool(pred), _bool(truth)
    out = {"dice": dice(p, t), "iou": iou(p, t)}
    dp = _inner_distance(p) if p.any() else np.zeros(p.shape, np.float32)
    dt = _inner_distance(t) if t.any() else np.zeros(t.shape, np.float32)
    for fraction in fractions:
        d = boundary_width(t.shape, fraction)
        bp, bt = p & (dp <= d), t & (dt <= d)
        union = int(np.count_nonzero(bp | bt))
        out[boundary_iou_key(fraction)] = 1.0 if union == 0 else int(np.count_nonzero(bp & bt)) / union
    cp, ct = p & (dp <= 1.0), t & (dt <= 1.0)
    n_p, n_t = int(cp.sum()), int(ct.sum())
    if n_p == 0 or n_t == 0:
        out["bf_score"] = 1.0 if n_p == n_t else 0.0
    else:
        to_t = cv2.distanceTransform((~ct).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        to_p = cv2.distanceTransform((~cp).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        precision = float((to_t[cp] <= tolerance_px).mean())
        recall = float((to_p[ct] <= tolerance_px).mean())
        out["bf_score"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    out["halo"] = halo(p, t, halo_band_px)
    return out


def boundary_iou_key(fraction: float) -> str:
    """Column name for a band width: 0.02 -> boundary_iou_2pct, 0.005 -> boundary_iou_0p5pct."""
    return "boundary_iou_" + f"{fraction * 100:g}".replace(".", "p") + "pct"

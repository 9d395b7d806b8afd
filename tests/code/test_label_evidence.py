"""The label's own evidence: a disputed label edge drawn through plain fabric or backdrop has no image edge
under it; a label whose edge is the garment's real outline keeps its support when the model is the one wrong."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from garmentseg.labels.audit import combined_score
from garmentseg.labels.evidence import edge_support

H, W = 216, 144
SHARE = 0.004  # labels.min_region_share


def _shot() -> tuple[np.ndarray, np.ndarray]:
    """A plain garment (a trapezoid with sleeves) on a grey backdrop, its exact mask, a little sensor noise."""
    rng = np.random.default_rng(3)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.array([[50, 30], [94, 30], [118, 190], [26, 190]], np.int32)], 255)
    cv2.rectangle(mask, (20, 40), (124, 70), 255, -1)
    img = np.where(mask[..., None] > 0, (180, 60, 60), (120, 120, 120)).astype(np.float32)
    img += rng.normal(0, 2, img.shape)
    return np.clip(cv2.GaussianBlur(img, (3, 3), 0), 0, 255).astype(np.uint8), mask > 0


def _damaged(kind: str, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8) * 255
    if kind == "hole":
        cv2.circle(m, (72, 130), 14, 0, -1)
    elif kind == "eroded":
        m = cv2.erode(m, np.ones((7, 7), np.uint8))
    elif kind == "dilated":
        m = cv2.dilate(m, np.ones((7, 7), np.uint8))
    elif kind == "spill":
        cv2.ellipse(m, (132, 140), (9, 22), 0, 0, 360, 255, -1)
    elif kind == "removed":
        m[150:175] = 0
    return m > 0


@pytest.mark.parametrize("kind", ["hole", "eroded", "dilated", "spill", "removed"])
def test_a_wrong_label_edge_has_no_image_edge_under_it(kind: str) -> None:
    shot, exact = _shot()
    wrong = _damaged(kind, exact)
    # the model is right: the label is disputed where it was damaged, and that edge runs through nothing
    assert edge_support(shot, wrong, exact, SHARE) < 0.5
    # the model made the same mistake and the label is right: the label's disputed edge is the real outline
    assert edge_support(shot, exact, wrong, SHARE) > 0.8


def test_agreement_is_full_support_and_the_weight_discounts_only_supported_labels() -> None:
    shot, exact = _shot()
    assert edge_support(shot, exact, exact, SHARE) == 1.0
    assert combined_score(0.99, 1.0, 0.0) == 0.99  # weight 0: cleanlab's score alone
    assert combined_score(0.99, 1.0, 0.5) == pytest.approx(0.495)
    assert combined_score(0.99, 0.1, 0.5) == pytest.approx(0.99 * 0.95)

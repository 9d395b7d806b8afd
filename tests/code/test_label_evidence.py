"""The label's own evidence: a disputed label edge drawn through plain fabric or backdrop has no image edge
under it; a label whose edge is the garment's real outline keeps its support when the model is the one wrong;
an outline cut a few pixels too tight or too loose runs beside the image's edge, with no model to ask."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from garmentseg.config import LabelsConfig
from garmentseg.labels.audit import audit_score, combined_score
from garmentseg.labels.evidence import edge_support, off_outline_share

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


def _cut(mask: np.ndarray, px: int, rows: slice = slice(None)) -> np.ndarray:
    """The label cut px too tight (px < 0) or too loose (px > 0) within `rows` only."""
    m = mask.astype(np.uint8)
    op = cv2.dilate if px > 0 else cv2.erode
    changed = op(m, np.ones((2 * abs(px) + 1,) * 2, np.uint8)) > 0
    out = mask.copy()
    out[rows] = changed[rows]
    return out


@pytest.mark.parametrize("px", [-3, -2, 3])  # a 2 px dilation is half in the blur: 0.26
def test_an_outline_cut_a_few_pixels_off_runs_beside_the_image_edge(px: int) -> None:
    shot, exact = _shot()
    right = off_outline_share(shot, exact, ridge_px=4)
    assert right < 0.1
    assert off_outline_share(shot, _cut(exact, px), ridge_px=4) > 0.6
    # only under the arms, as a retoucher's thin cut: a part of the outline, still far above the right label
    assert off_outline_share(shot, _cut(exact, px, slice(60, 120)), ridge_px=4) > right + 0.25


def test_the_audit_score_takes_the_stronger_evidence() -> None:
    labels = LabelsConfig(
        audit_height=8, audit_width=8, temperature=0.1, min_region_share=0.0, band_px=1.0,
        exclude_score=0.7, edge_weight=0.5, outline_scale=2, outline_ridge_px=4, outline_weight=2.0,
    )  # fmt: skip
    assert audit_score(0.99, 0.1, 0.0, labels) == pytest.approx(0.99 * 0.95)  # a disputed region alone
    assert audit_score(0.2, 1.0, 0.3, labels) == pytest.approx(0.6)  # the model agrees; the outline is off
    assert audit_score(0.2, 1.0, 0.7, labels) == 1.0
    assert audit_score(0.2, 1.0, 0.3, labels.model_copy(update={"outline_weight": 0.0})) == 0.1


def test_a_cut_the_model_agrees_with_is_named_by_its_outline() -> None:
    from garmentseg.config import load_config
    from garmentseg.labels.audit import judge

    cfg = load_config("demo", overrides={"labels": {"audit_height": H // 2, "audit_width": W // 2}})
    shot, exact = _shot()
    tight = _cut(exact, -3, slice(30, 140))
    # the model agrees with each label up to the blur: only the outline can tell the tight cut
    found = judge("g_Front", shot, tight, tight.astype(np.float32), 0.5, cfg)
    right = judge("g_Front", shot, exact, exact.astype(np.float32), 0.5, cfg)
    assert found.kind == "outline" and found.reason.startswith("outline: ") and found.score >= 0.5
    assert right.kind == "none" and right.score < 0.25

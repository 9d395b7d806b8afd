"""Evidence from the label itself: where the model disputes a label, does the label's edge sit on an edge of
the image?

A retoucher's mistake draws an edge where the shot has none: a hole punched in plain fabric, a straight cut
across a sleeve, an outline a few pixels inside or outside the garment, a blob on the backdrop. A model's own
mistake leaves the label's edge on the garment's real outline. So each disputed region (a disagreement
component, slivers and specks left out, grown by EDGE_ZONE_PX) is judged by the image gradient along the
label's edge inside it (`edge_support`), and the score is discounted by it (`labels.audit.combined_score`):
cleanlab's label quality says where the model disagrees, this says whose edge the image backs. The same idea
as validation's edge alignment (`validation.content.edge_alignment`), asked locally, where the model
disagrees, and without the model's edge as the reference.

A label cut a few pixels too tight or too loose (a thin cut under the arms, an outline eroded or dilated) is
invisible to that test: at the model's input size the model agrees with it up to the edge blur, so there is
no disputed region. `off_outline_share` asks the label alone, at a finer size: how much of its outline runs
beside the image's edge instead of on it.
"""

from __future__ import annotations

import numpy as np

from garmentseg.labels.disagreement import disputed

EDGE_ZONE_PX = 2  # the disputed regions grown by this (audit px): the label's edge borders them
MIN_EDGE_PX = 8  # fewer edge pixels than this are no reference
RIDGE_PX = 3  # audit px: how far from the label's edge the strongest image edge is looked for
OFF_RIDGE = 0.5  # an outline pixel whose gradient is under this share of the strongest nearby is off the edge
STRONG_NEARBY = 0.5  # ... when that nearby edge is at least this share of the outline's median gradient


def gradient(shot: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, the strongest of the three colour channels (a hue edge counts too)."""
    import cv2

    img = shot.astype(np.float32)
    gx, gy = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(gx**2 + gy**2)
    return magnitude.max(axis=2) if magnitude.ndim == 3 else magnitude


def edge_of(mask: np.ndarray) -> np.ndarray:
    """The mask's own outermost pixels (4-connected boundary)."""
    import cv2

    return mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _support(grad: np.ndarray, nearby: np.ndarray, edge: np.ndarray, typical: float) -> float:
    """Mean over the edge pixels of: on the ridge x strength (each pixel's own factors, capped at 1)."""
    on_ridge = grad[edge] / np.maximum(nearby[edge], 1e-6)
    strength = np.minimum(1.0, nearby[edge] / max(typical, 1e-6))
    return float((on_ridge * strength).mean())


def edge_support(shot: np.ndarray, label: np.ndarray, pred: np.ndarray, min_share: float) -> float:
    """0..1: how well the label's edge sits on an image edge in its worst disputed region (1 undisputed).

    Per edge pixel, two factors, neither asks the model where the edge is: on the ridge (its gradient over
    the strongest within RIDGE_PX: a label a few pixels off the garment's outline scores low) and strength
    (that strongest nearby gradient over the gradient along the label's undisputed edge, capped at 1: an edge
    drawn through plain fabric or backdrop has nothing strong nearby). Each disputed region is judged on its
    own and the worst counts: one punched hole is not diluted by the model's small misses elsewhere.
    """
    import cv2

    zone = disputed(label, pred, min_share)
    if not zone.any():
        return 1.0
    size = 2 * EDGE_ZONE_PX + 1
    zone = cv2.dilate(zone.astype(np.uint8), np.ones((size, size), np.uint8))
    label_edge = edge_of(label)
    if not label_edge.any():  # an empty or full label: no edge to weigh (disagreement.whole_label judges it)
        return 1.0
    grad = gradient(shot)
    ridge = 2 * RIDGE_PX + 1
    nearby = cv2.dilate(grad, np.ones((ridge, ridge), np.uint8))
    undisputed = label_edge & (zone == 0)
    typical = (
        float(grad[undisputed].mean())
        if undisputed.sum() >= MIN_EDGE_PX
        else float(nearby[label_edge].mean())
    )
    count, regions = cv2.connectedComponents(zone, connectivity=8)
    supports = [
        _support(grad, nearby, edge, typical)
        for edge in (label_edge & (regions == i) for i in range(1, count))
        if edge.sum() >= MIN_EDGE_PX
    ]
    return min(supports, default=1.0)


def off_outline_share(shot: np.ndarray, label: np.ndarray, ridge_px: int) -> float:
    """0..1: the share of the label's outline drawn beside the image's edge, not on it.

    An outline pixel is off the edge when its gradient is under OFF_RIDGE of the strongest gradient within
    ridge_px and that strongest one is a real edge (STRONG_NEARBY of the outline's median): the garment's
    outline runs a few pixels away. A right label sits on the ridge almost everywhere (0.02 median on the
    synthetic studio); a cut 4 px too tight under the arms leaves 0.1-0.5 of the outline off it.
    """
    import cv2

    edge = edge_of(label)
    if edge.sum() < MIN_EDGE_PX:
        return 0.0
    grad = gradient(cv2.GaussianBlur(shot, (0, 0), 1.0))  # sensor noise makes no ridge of its own
    size = 2 * ridge_px + 1
    nearby = cv2.dilate(grad, np.ones((size, size), np.uint8))
    typical = float(np.median(grad[edge]))
    off = edge & (grad < OFF_RIDGE * nearby) & (nearby > STRONG_NEARBY * typical)
    return float(off.sum() / edge.sum())

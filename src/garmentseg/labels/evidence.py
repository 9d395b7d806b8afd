"""Evidence from the label itself: where the model disputes a label, does the label's edge sit on an edge of
the image?

A retoucher's mistake draws an edge where the shot has none: a hole punched in plain fabric, a straight cut
across a sleeve, an outline a few pixels inside or outside the garment, a blob on the backdrop. A model's own
mistake leaves the label's edge on the garment's real outline. So, inside the disputed regions (disagreement
components, slivers and specks left out, grown by EDGE_ZONE_PX), the image gradient along the label's edge
is compared with the gradient along the same label's undisputed edge (or, when all of it is disputed, along
the model's edge): `edge_support` is their ratio, about 1 when the disputed edge is as real as the rest, near
0 when it runs through plain fabric or backdrop. A dispute that leaves the label's edge alone (the model
alone draws a hole) leaves the support at 1. The same idea as validation's edge alignment
(`validation.content.edge_alignment`), asked locally, where the model disagrees.
"""

from __future__ import annotations

import numpy as np

from garmentseg.labels.disagreement import disputed

EDGE_ZONE_PX = 2  # the disputed regions grown by this (audit px): the label's edge borders them
MIN_EDGE_PX = 8  # fewer edge pixels than this are no reference
SUPPORT_MAX = 2.0


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


def edge_support(shot: np.ndarray, label: np.ndarray, pred: np.ndarray, min_share: float) -> float:
    """Image gradient on the label's disputed edge over that on its undisputed edge (0..SUPPORT_MAX)."""
    import cv2

    zone = disputed(label, pred, min_share)
    if not zone.any():
        return 1.0
    size = 2 * EDGE_ZONE_PX + 1
    zone = cv2.dilate(zone.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    grad = gradient(shot)
    label_edge = edge_of(label)
    contested = label_edge & zone
    if contested.sum() < MIN_EDGE_PX:
        return 1.0
    reference = label_edge & ~zone
    if reference.sum() < MIN_EDGE_PX:
        reference = edge_of(pred)
    typical = (
        float(grad[reference].mean()) if reference.sum() >= MIN_EDGE_PX else float(np.percentile(grad, 95))
    )
    return float(min(SUPPORT_MAX, grad[contested].mean() / max(typical, 1e-6)))

"""Where a model and a label disagree, in words and in a picture: the reason and the overlay of an audit.

The two one-sided differences are split into connected components:
- model-only pixels (the model sees garment the label leaves out): a **hole** when the label surrounds the
  component, a **band** when the component is thin and runs along the label's edge (a label eroded, cut too
  thin), else a **missing** region (a sleeve, a back layer, a hem left out);
- label-only pixels (the label covers what the model calls background): a **filled** hole when the model's
  mask surrounds it (the gap between an arm and the body painted over), a **band** when thin along the edge
  (a label dilated), else a **spill** onto the background.
A strip is a band however thick when it lies along the other mask's edge: at least BAND_CONTACT of its rim
on that mask and BAND_ELONGATION times longer than thick (a label eroded or dilated by 10 px all round is a
ring 10 px wide and hundreds long; a sleeve left out touches the label at the shoulder only).
Slivers (a pixel wide) are the edge blur every model has and are left out. Components smaller than
`labels.min_region_share` of the label are counted together: when they add up to SCATTERED_SHARES times
that share, the reason is **scattered** (fine detail such as eyelets or lace that one side resolves and
the other does not, or a noisy label). The largest remaining component names the reason; the ranking itself
comes from the score (see `labels.audit`), never from this geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from garmentseg.model.metrics import dice

# Disagreement whose mean width is at most this (px at audit size) is two edges a pixel apart: no finding.
SLIVER_PX = 1.5
SCATTERED_SHARES = 5
BAND_CONTACT = 0.4
BAND_ELONGATION = 8.0
KINDS = (
    "empty",
    "full",
    "inverted",
    "shifted",
    "missing",
    "hole",
    "band",
    "spill",
    "filled",
    "scattered",
    "none",
)
# A label with (almost) nothing in it, or (almost) the whole frame: no garment photo is cut out like that.
EMPTY_SHARE, FULL_SHARE = 0.002, 0.98
# A label that matches the model's background better than its garment, and that well: inverted.
INVERTED_DICE = 0.5
# A label moved whole (a layer offset on export): moved back by at least SHIFT_MIN_PX at the audit size, it
# agrees with the model by SHIFT_GAIN more Dice, and well (SHIFT_AGREES).
SHIFT_MIN_PX, SHIFT_GAIN, SHIFT_AGREES = 2, 0.1, 0.8
_MODEL_ONLY = (40, 140, 255)  # blue: garment the label leaves out
_LABEL_ONLY = (255, 40, 60)  # red: background the label covers
_LABEL_TINT = (40, 200, 90)
_MODEL_TINT = (60, 150, 255)


@dataclass(frozen=True)
class Region:
    """One connected component of disagreement."""

    kind: str
    side: str  # "model_only" | "label_only"
    area: int
    thickness: float  # px at audit size: twice the largest inscribed radius
    centre: tuple[float, float]  # (x, y) as shares of the width and height


def _components(diff: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(component mask, area) of every 8-connected component of a bool image."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(diff.astype(np.uint8), connectivity=8)
    return [(labels == i, int(stats[i, cv2.CC_STAT_AREA])) for i in range(1, count)]


def _thickness(component: np.ndarray) -> float:
    import cv2

    inside = np.pad(component.astype(np.uint8), 1)
    return 2.0 * float(cv2.distanceTransform(inside, cv2.DIST_L2, 5).max())


def _mean_width(component: np.ndarray, area: int) -> float:
    """2 x area / outline length: the width of a long strip (a line one pixel wide scores about 1)."""
    import cv2

    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return 2.0 * area / max(sum(cv2.arcLength(c, closed=True) for c in contours), 1.0)


def _ring(component: np.ndarray) -> np.ndarray:
    """The pixels just outside a component (its 8-neighbours), clipped to the frame."""
    import cv2

    grown = cv2.dilate(component.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return grown & ~component


def _encloses(mask: np.ndarray, component: np.ndarray) -> bool:
    """True when `mask` surrounds the component: its whole ring is mask, and it does not touch the frame."""
    on_frame = component[0].any() or component[-1].any() or component[:, 0].any() or component[:, -1].any()
    ring = _ring(component)
    return not on_frame and bool(ring.any()) and bool(mask[ring].all())


def _along_edge(component: np.ndarray, area: int, thickness: float, other: np.ndarray) -> bool:
    """A strip lying along `other`'s edge: long for its thickness, and much of its rim on `other`."""
    long = area >= BAND_ELONGATION * thickness**2
    return long and float(other[_ring(component)].mean()) >= BAND_CONTACT


def _kind(
    side: str,
    component: np.ndarray,
    area: int,
    thickness: float,
    label: np.ndarray,
    pred: np.ndarray,
    band_px: float,
) -> str:
    thin = thickness <= band_px
    if side == "model_only":
        if _encloses(label, component):
            return "hole"
        if (thin and bool(label[_ring(component)].any())) or _along_edge(component, area, thickness, label):
            return "band"
        return "missing"
    if _encloses(pred, component):
        return "filled"
    return "band" if thin or _along_edge(component, area, thickness, pred) else "spill"


def regions(
    label: np.ndarray, pred: np.ndarray, *, min_share: float, band_px: float
) -> tuple[list[Region], int]:
    """(the disagreement components that matter, largest first; the area of the small ones together) for
    bool masks of one size."""
    h, w = label.shape
    min_area = max(1.0, min_share * max(int(label.sum()), 1))
    found = []
    small = 0
    for side, diff in (("model_only", pred & ~label), ("label_only", label & ~pred)):
        for component, area in _components(diff):
            if _mean_width(component, area) <= SLIVER_PX:
                continue
            if area < min_area:
                small += area
                continue
            thickness = _thickness(component)
            ys, xs = np.nonzero(component)
            found.append(
                Region(
                    kind=_kind(side, component, area, thickness, label, pred, band_px),
                    side=side,
                    area=area,
                    thickness=thickness,
                    centre=(float(xs.mean()) / w, float(ys.mean()) / h),
                )
            )
    return sorted(found, key=lambda r: -r.area), small


def disputed(label: np.ndarray, pred: np.ndarray, min_share: float) -> np.ndarray:
    """The pixels of every disagreement component `regions` would report (slivers and specks left out)."""
    min_area = max(1.0, min_share * max(int(label.sum()), 1))
    out = np.zeros(label.shape, bool)
    for component, area in _components(label ^ pred):
        if area >= min_area and _mean_width(component, area) > SLIVER_PX:
            out |= component
    return out


_WORDS = {
    "missing": "missing region: the label leaves out garment the model sees",
    "hole": "hole: the label has a hole where the model sees garment",
    "band": "band along the edge",
    "spill": "spill onto the background: the label covers what the model calls background",
    "filled": "filled hole: the label covers a gap the model sees inside the garment",
}


def _where(centre: tuple[float, float]) -> str:
    x, y = centre
    vertical = "top" if y < 1 / 3 else "middle" if y < 2 / 3 else "bottom"
    horizontal = "left" if x < 1 / 3 else "centre" if x < 2 / 3 else "right"
    return f"{vertical} {horizontal}"


def whole_label(label: np.ndarray, pred: np.ndarray) -> tuple[str, str] | None:
    """(kind, reason) when the label as a whole is wrong, whatever its edges say: empty, the whole frame, or
    inverted (the garment cut away, the rest kept). Region evidence cannot see these: an empty label has no
    edge to weigh, and an inverted one's edge is the garment's true outline. None otherwise."""
    share = float(label.mean())
    if share < EMPTY_SHARE:
        return "empty", (
            f"empty: the label covers {share:.2%} of the frame; the model finds garment on {pred.mean():.0%} of it"
        )
    if share > FULL_SHARE:
        return (
            "full",
            f"full: the label covers {share:.1%} of the frame (no alpha cut out, or the frame filled)",
        )
    garment, background = dice(label, pred), dice(label, ~pred)
    if pred.any() and background >= INVERTED_DICE and background > garment:
        return "inverted", (
            f"inverted: the label covers what the model calls background (Dice {background:.2f} with it, "
            f"{garment:.2f} with the model's garment); the alpha channel is the wrong way round"
        )
    return None


def shifted_label(label: np.ndarray, pred: np.ndarray, scale: float) -> tuple[str, str] | None:
    """("shifted", reason) when the label is the garment's shape moved whole: phase correlation finds the
    offset, and the label moved back agrees with the model clearly better. `scale`: shot px per audit px,
    so the reason speaks in the shot's pixels. Region evidence reads such a label as a band on one side and
    a spill on the other."""
    import cv2

    if not label.any() or not pred.any():
        return None
    (dx, dy), _ = cv2.phaseCorrelate(label.astype(np.float32), pred.astype(np.float32))
    dx, dy = round(dx), round(dy)
    if max(abs(dx), abs(dy)) < SHIFT_MIN_PX:
        return None
    h, w = label.shape
    back = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(label.astype(np.uint8), back, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    before, after = dice(label, pred), dice(moved, pred)
    if after < max(before + SHIFT_GAIN, SHIFT_AGREES):
        return None
    offsets = [(-dx, "to the right", "to the left"), (-dy, "down", "up")]
    words = " and ".join(
        f"{round(abs(d) * scale)} px {more if d > 0 else less}" for d, more, less in offsets if d
    )
    return "shifted", (
        f"shifted: the label is offset from the garment the model sees by {words}; moved back it agrees "
        f"at Dice {after:.2f} (as it is {before:.2f})"
    )


def describe(found: list[Region], small: int, label_area: int, min_share: float) -> tuple[str, str]:
    """(kind, reason) for an image's regions: the largest names the kind; the others are listed after it."""
    scattered = small / max(label_area, 1)
    if not found and scattered >= SCATTERED_SHARES * min_share:
        return "scattered", (
            f"scattered: many small disagreements ({scattered:.1%} of the label's area), fine detail "
            "(eyelets, lace, fringes) that the model or the label does not resolve"
        )
    if not found:
        return "none", "none: the model and the label agree up to the edge blur"
    parts = []
    for region in found[:3]:
        words = _WORDS[region.kind]
        if region.kind == "band":
            too = "thin (eroded)" if region.side == "model_only" else "wide (dilated)"
            words = f"{words}: the label is too {too}, {region.thickness:.0f} px thick"
        share = region.area / max(label_area, 1)
        # A region the model sees that outgrows the whole label: the label has nearly nothing in it.
        amount = (
            f"{share:.1%} of the label's area"
            if share <= 1
            else f"{share:.0f}x the label's area: the label is nearly empty"
        )
        parts.append(f"{words} ({amount}, {_where(region.centre)})")
    more = len(found) - 3
    return found[0].kind, "; ".join(parts) + (f"; and {more} smaller" if more > 0 else "")


def overlay(shot: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """shot with the label (green) | shot with the model's mask (blue) | disagreement: blue where the label
    leaves out what the model sees, red where the label covers what the model calls background."""
    base = shot.astype(np.float32)
    grey = np.repeat(base.mean(axis=2, keepdims=True), 3, axis=2) * 0.6 + 40

    def tint(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> np.ndarray:
        out = img.copy()
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
        return out

    diff = tint(grey, pred & ~label, _MODEL_ONLY, 0.85)
    diff = tint(diff, label & ~pred, _LABEL_ONLY, 0.85)
    gap = np.full((shot.shape[0], 4, 3), 255, np.float32)
    panels = [tint(base, label, _LABEL_TINT, 0.45), gap, tint(base, pred, _MODEL_TINT, 0.45), gap, diff]
    return np.clip(np.hstack(panels), 0, 255).astype(np.uint8)

"""Full-resolution edges: the guided filter that snaps the upsampled probability to the shot's own edges.

The U-Net sees the shot at 192x128 or 288x192, so its probability, grown back 6-9x with INTER_CUBIC, has an
edge as soft and as wobbly as one input pixel. The guided filter (He, Sun and Tang, ECCV 2010) fits the
probability, window by window, as a linear function of the full-resolution shot: where a window straddles
the garment's edge, the fitted probability steps where the shot's colour steps. It is computed on a grid
`subsample` times coarser and its coefficients grown back (the fast guided filter, He and Sun 2015): the
coefficients are smooth, the shot that multiplies them is not, so the edge keeps full resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from garmentseg.config import InferenceConfig

REFINE_METHODS = ("none", "guided")
GUIDES = ("grey", "colour")


@dataclass(frozen=True)
class Refinement:
    """How a model's full-resolution probability is refined; stored with the model, since its thresholds
    were tuned on the refined probability."""

    method: str = "none"
    guide: str = "colour"
    radius: int = 8  # window radius, full-resolution pixels
    eps: float = 1e-3  # regularisation on the guide's variance (guide scaled to 0..1)
    subsample: int = 4  # the coefficients' grid, 1 = He et al. 2010 exactly

    def __post_init__(self) -> None:
        if self.method not in REFINE_METHODS:
            raise ValueError(f"refine={self.method!r} is not one of {', '.join(REFINE_METHODS)}")
        if self.guide not in GUIDES:
            raise ValueError(f"guide={self.guide!r} is not one of {', '.join(GUIDES)}")
        if self.radius < 1 or self.eps <= 0 or self.subsample < 1:
            raise ValueError(f"radius >= 1, eps > 0 and subsample >= 1, got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, inference: InferenceConfig) -> Refinement:
        """A new model's refinement: params.yaml's `inference` section."""
        return cls(inference.refine, inference.guide, inference.radius, inference.eps, inference.subsample)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Refinement:
        """A model logged before refinement existed carries none: method none."""
        return cls(**(values or {}))


CANDIDATE_KEYS = {
    "refine": "method",
    "guide": "guide",
    "radius": "radius",
    "eps": "eps",
    "subsample": "subsample",
}


def refinement_candidates(inference: InferenceConfig) -> list[Refinement]:
    """The configured refinement first, then each of `inference.candidates` (params.yaml keys overriding
    it), without repeats."""
    base = Refinement.from_config(inference)
    found = [base]
    for override in inference.candidates:
        unknown = sorted(set(override) - set(CANDIDATE_KEYS))
        if unknown:
            raise ValueError(f"inference.candidates: {unknown} not among {sorted(CANDIDATE_KEYS)}")
        candidate = replace(base, **{CANDIDATE_KEYS[k]: v for k, v in override.items()})
        if candidate not in found:
            found.append(candidate)
    return found


def as_params(refinement: Refinement) -> dict[str, Any]:
    """The refinement as params.yaml's `inference` keys (a candidate, or the section itself)."""
    return {key: getattr(refinement, field) for key, field in CANDIDATE_KEYS.items()}


def describe(refinement: Refinement) -> str:
    """One short name for logs, tables and benchmark flags: none | guided:<guide>:<radius>:<eps>:<subsample>."""
    if refinement.method == "none":
        return "none"
    r = refinement
    return f"{r.method}:{r.guide}:{r.radius}:{r.eps:g}:{r.subsample}"


def parse(text: str) -> Refinement:
    """describe's inverse."""
    if text == "none":
        return Refinement()
    method, guide, radius, eps, subsample = text.split(":")
    return Refinement(method, guide, int(radius), float(eps), int(subsample))


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window, the window shrunk at the frame's border (normalised box filter)."""
    import cv2

    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)


def _coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> list[np.ndarray]:
    """The window-averaged linear coefficients [a_1..a_c, b] of src ~ a . guide + b (He et al., eq. 5-6)."""
    mean_p = _box(src, radius)
    if guide.ndim == 2:
        mean_i = _box(guide, radius)
        var = _box(guide * guide, radius) - mean_i * mean_i
        a = (_box(guide * src, radius) - mean_i * mean_p) / (var + eps)
        return [_box(a, radius), _box(mean_p - a * mean_i, radius)]
    if guide.shape[2] != 3:
        raise ValueError(f"a colour guide has 3 channels, got {guide.shape[2]}")
    g = [guide[..., c] for c in range(3)]
    mean = [_box(c, radius) for c in g]
    cov = [_box(c * src, radius) - m * mean_p for c, m in zip(g, mean, strict=True)]

    def var(i: int, j: int) -> np.ndarray:
        return _box(g[i] * g[j], radius) - mean[i] * mean[j] + (eps if i == j else 0.0)

    # Sigma + eps I is symmetric 3x3: solve it per pixel with its adjugate (np.linalg.solve is ~10x slower)
    s00, s01, s02, s11, s12, s22 = var(0, 0), var(0, 1), var(0, 2), var(1, 1), var(1, 2), var(2, 2)
    adj = [
        [s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11],
        [None, s00 * s22 - s02 * s02, s01 * s02 - s00 * s12],
        [None, None, s00 * s11 - s01 * s01],
    ]
    det = s00 * adj[0][0] + s01 * adj[0][1] + s02 * adj[0][2]

    def inv(i: int, j: int) -> np.ndarray:
        return adj[min(i, j)][max(i, j)]

    a = [sum(inv(i, j) * cov[j] for j in range(3)) / det for i in range(3)]
    b = mean_p - sum(a_c * m for a_c, m in zip(a, mean, strict=True))
    return [_box(a_c, radius) for a_c in a] + [_box(b, radius)]


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1, scale: float = 1.0
) -> np.ndarray:
    """He et al.'s guided filter of `src` (HxW float) by `guide` (HxW or HxWx3, values x `scale` in 0..1),
    float32 HxW; with subsample > 1 the coefficients are computed on a grid that much coarser (He and Sun
    2015) and only their product with the guide is done at full resolution, on the guide as given (uint8
    is fine: `scale` is folded into the coefficients)."""
    import cv2

    src = np.asarray(src, np.float32)
    h, w = src.shape
    if subsample > 1:
        small = (max(1, round(w / subsample)), max(1, round(h / subsample)))
        coarse = _coefficients(
            cv2.resize(guide, small, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(scale),
            cv2.resize(src, small, interpolation=cv2.INTER_AREA),
            max(1, round(radius / subsample)),
            eps,
        )
        coarse = [a * np.float32(scale) for a in coarse[:-1]] + coarse[-1:]
        coeffs = [cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in coarse]
    else:
        coeffs = _coefficients(guide.astype(np.float32) * np.float32(scale), src, radius, eps)
        coeffs = [a * np.float32(scale) for a in coeffs[:-1]] + coeffs[-1:]
    out = coeffs[-1]
    channels = [guide] if guide.ndim == 2 else [guide[..., c] for c in range(guide.shape[2])]
    for a, g in zip(coeffs[:-1], channels, strict=True):
        a *= g
        out += a
    return out


def refine_proba(prob: np.ndarray, image_rgb: np.ndarray, refinement: Refinement) -> np.ndarray:
    """The full-resolution probability refined as `refinement` says, float32 in [0, 1]."""
    if refinement.method == "none":
        return prob
    import cv2

    if image_rgb.shape[:2] != prob.shape:
        raise ValueError(f"shot {image_rgb.shape[:2]} and probability {prob.shape} differ in size")
    guide = np.ascontiguousarray(image_rgb[..., :3])
    if refinement.guide == "grey":
        guide = cv2.cvtColor(guide, cv2.COLOR_RGB2GRAY)
    r = refinement
    out = guided_filter(guide, prob, r.radius, r.eps, r.subsample, scale=1 / 255)
    return np.clip(out, 0.0, 1.0, out=out)

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
from dataclasses import asdict, dataclass
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
    channels = guide.shape[2]
    means = [_box(guide[..., c], radius) for c in range(channels)]
    cov_ip = np.stack([_box(guide[..., c] * src, radius) - means[c] * mean_p for c in range(channels)], -1)
    sigma = np.empty((*src.shape, channels, channels), np.float32)
    for i in range(channels):
        for j in range(i, channels):
            v = _box(guide[..., i] * guide[..., j], radius) - means[i] * means[j]
            sigma[..., i, j] = sigma[..., j, i] = v
    sigma += eps * np.eye(channels, dtype=np.float32)
    a = np.linalg.solve(sigma, cov_ip[..., None])[..., 0]
    b = mean_p - np.einsum("...c,...c->...", a, np.stack(means, -1))
    return [_box(np.ascontiguousarray(a[..., c]), radius) for c in range(channels)] + [_box(b, radius)]


def guided_filter(
    guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1
) -> np.ndarray:
    """He et al.'s guided filter of `src` (HxW float) by `guide` (HxW or HxWxC float, 0..1), float32 HxW;
    with subsample > 1 the coefficients are computed on a grid that much coarser (He and Sun 2015)."""
    import cv2

    guide = np.asarray(guide, np.float32)
    src = np.asarray(src, np.float32)
    h, w = src.shape
    if subsample > 1:
        small = (max(1, round(w / subsample)), max(1, round(h / subsample)))
        coarse = _coefficients(
            cv2.resize(guide, small, interpolation=cv2.INTER_AREA),
            cv2.resize(src, small, interpolation=cv2.INTER_AREA),
            max(1, round(radius / subsample)),
            eps,
        )
        coeffs = [cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in coarse]
    else:
        coeffs = _coefficients(guide, src, radius, eps)
    out = coeffs[-1].copy()
    channels = [guide] if guide.ndim == 2 else [guide[..., c] for c in range(guide.shape[2])]
    for a, g in zip(coeffs[:-1], channels, strict=True):
        out += a * g
    return out


def refine_proba(prob: np.ndarray, image_rgb: np.ndarray, refinement: Refinement) -> np.ndarray:
    """The full-resolution probability refined as `refinement` says, float32 in [0, 1]."""
    if refinement.method == "none":
        return prob
    import cv2

    if image_rgb.shape[:2] != prob.shape:
        raise ValueError(f"shot {image_rgb.shape[:2]} and probability {prob.shape} differ in size")
    guide = image_rgb[..., :3]
    if refinement.guide == "grey":
        guide = cv2.cvtColor(np.ascontiguousarray(guide), cv2.COLOR_RGB2GRAY)
    scaled = guide.astype(np.float32) / 255.0
    out = guided_filter(scaled, prob, refinement.radius, refinement.eps, refinement.subsample)
    return np.clip(out, 0.0, 1.0, out=out)

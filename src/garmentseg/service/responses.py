"""What the endpoints answer: the library pipeline (`garmentseg.inference`, shared with `garmentseg predict`
and evaluation, so serving cannot drift) from uploaded bytes to PNG or JSON, and the model headers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from garmentseg.imageio import encode_png
from garmentseg.service import HEADER_NAME, HEADER_VERSION
from garmentseg.service.uploads import read_upload

if TYPE_CHECKING:
    from garmentseg.config import ServingConfig
    from garmentseg.inference import CutoutModel, Maps
    from garmentseg.service.runtime import ModelRuntime

T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    """One shot and the model's probabilities for it: what every answer is rendered from."""

    model: CutoutModel
    image: np.ndarray
    maps: Maps

    @property
    def prob(self) -> np.ndarray:
        """The full-resolution map every image answer is made of."""
        return self.maps.prob


def respond(
    runtime: ModelRuntime,
    model: CutoutModel,
    data: bytes,
    render: Callable[[Prediction], T],
    serving: ServingConfig,
) -> T:
    """Uploaded bytes -> shot -> probabilities -> answer: one endpoint call, in one worker-thread hop."""
    image = read_upload(data, max_bytes=serving.max_request_bytes, max_pixels=serving.max_pixels)
    return render(Prediction(model, image, runtime.predict_maps(model, image)))


def cutout_png(p: Prediction, alpha: str = "binary") -> bytes:
    """RGBA PNG whose alpha is the mask, or with `alpha` soft its anti-aliased outline (serving.alpha):
    what `garmentseg predict` writes."""
    from garmentseg.inference import cutout_alpha, to_cutout

    return encode_png(to_cutout(p.image, cutout_alpha(p.prob, p.model.threshold, alpha)))


def mask_png(p: Prediction, probability: bool = False) -> bytes:
    """Single-channel PNG: the 0/255 mask, or with `probability` the map scaled to 0..255."""
    from garmentseg.inference import to_mask

    if probability:
        return encode_png(np.rint(p.prob * 255.0).astype(np.uint8))
    return encode_png(to_mask(p.prob, p.model.threshold))


def analysis(p: Prediction) -> dict[str, Any]:
    """The /analyze body: mask statistics, the needs-manual-cutout score and flag, the model."""
    from garmentseg.inference import to_mask

    model = p.model
    score, flagged = model.needs_manual_cutout(p.prob)
    return {
        **mask_stats(to_mask(p.prob, model.threshold)),
        "manual_cutout_score": score,
        "needs_manual_cutout": bool(flagged),
        "flag_threshold": model.flag_threshold,
        "threshold": model.threshold,
        "model_name": model.model_name,
        "model_version": model.model_version,
    }


def mask_stats(mask: np.ndarray) -> dict[str, Any]:
    """Garment fraction, bounding box and connected components of a uint8 0/255 mask."""
    import cv2

    binary = (mask > 0).astype(np.uint8)
    h, w = binary.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True)
    total = int(binary.sum())
    bbox = None
    if total:
        ys, xs = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
        bbox = {
            "x": int(xs[0]),
            "y": int(ys[0]),
            "width": int(xs[-1] - xs[0] + 1),
            "height": int(ys[-1] - ys[0] + 1),
        }
    return {
        "width": w,
        "height": h,
        "garment_fraction": total / float(h * w),
        "bbox": bbox,
        "components": count - 1,
        "largest_component_fraction": (areas[0] / total) if total else 0.0,
    }


def model_headers(model: CutoutModel | None) -> dict[str, str]:
    """X-Model-Name / X-Model-Version of the model that answered (none before one is loaded)."""
    if model is None:
        return {}
    return {HEADER_NAME: model.model_name or "unregistered", HEADER_VERSION: model.model_version or "unknown"}

"""From body units to pixels: the camera and the antialiased drawing primitives every layer uses."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REF_HEIGHT = 1728  # sizes in pixels are given for a 1728-high frame and scale with the frame


@dataclass(frozen=True)
class Camera:
    """Body units -> pixels: px = ox + sx * x, py = oy + u * y (sx < 0 mirrors for the Back view)."""

    ox: float
    oy: float
    sx: float
    u: float

    def px(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, float)
        return np.stack([self.ox + self.sx * p[:, 0], self.oy + self.u * p[:, 1]], axis=1)

    def matrix(self, scale: float, x0: float, y0: float) -> np.ndarray:
        """Affine map from a texture canvas (scale px/unit, origin at units (x0, y0)) to the frame."""
        return np.array(
            [[self.sx / scale, 0, self.ox + self.sx * x0], [0, self.u / scale, self.oy + self.u * y0]],
            np.float64,
        )


def cover(polys: list[np.ndarray], cam: Camera, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased coverage (uint8 0..255) of polygons given in body units."""
    canvas = np.zeros(shape, np.uint8)
    for poly in polys:  # one call each: fillPoly treats several contours even-odd (overlaps cancel)
        cv2.fillPoly(canvas, [np.round(cam.px(poly) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return canvas


def band(y0: float, y1: float, cam: Camera, shape: tuple[int, int]) -> np.ndarray:
    """Coverage of the horizontal band y0..y1 (body units) across the whole frame."""
    return cover([np.array([(-1, y0), (1, y0), (1, y1), (-1, y1)])], cam, shape)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, blur: float) -> np.ndarray:
    """Low-frequency noise in 0..1 at full size (made small, blurred, upscaled)."""
    small = rng.random((cells * 3 // 2 + 2, cells + 2)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), blur)
    small = (small - small.min()) / (np.ptp(small) + 1e-6)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def roundness(coverage: np.ndarray, sigma_px: float) -> np.ndarray:
    """A blurred silhouette: ~1 deep inside a part, ~0.5 at its edge; cheap shading for round forms."""
    h, w = coverage.shape
    small = cv2.resize(coverage, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / 4, 0.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def paint(
    img: np.ndarray,
    label: np.ndarray,
    coverage: np.ndarray,
    colour: np.ndarray,
    value: int,
    opacity: float = 1.0,
    shade: np.ndarray | None = None,
) -> None:
    """Composite a colour (full-frame array or one RGB) through a coverage, optionally shaded."""
    x, y, w, h = cv2.boundingRect(coverage)
    if w == 0 or h == 0:
        return
    sl = (slice(y, y + h), slice(x, x + w))
    a = coverage[sl].astype(np.float32)[..., None] * (opacity / 255.0)
    col = colour[sl] if colour.ndim == 3 else colour
    if shade is not None:
        col = col * shade[sl][..., None]
    img[sl] = img[sl] * (1 - a) + col * a
    label[sl][coverage[sl] >= 128] = value

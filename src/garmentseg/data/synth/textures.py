"""Fabrics: one canvas per garment in body units, drawn once so that every view shows the same cloth.

Each fabric or print with a look of its own is one small function in `_DRAW`; solid, sheer and fur cloth
is the base colour with folds and grain only (sheer and fur happen at render time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from garmentseg.data.synth.garment import Garment
from garmentseg.data.synth.raster import Camera, smooth_field

_TEX_SCALE = 700.0  # texture canvas pixels per body unit at a 1728-high frame
_TEX_X0, _TEX_Y0, _TEX_W, _TEX_H = -0.36, 0.08, 0.72, 0.92


@dataclass(frozen=True)
class _Canvas:
    """The fabric being drawn: colour (float RGB) and lace holes, with each pixel's body-unit position."""

    tex: np.ndarray
    holes: np.ndarray
    xx: np.ndarray
    yy: np.ndarray
    scale: float  # canvas pixels per body unit
    k: float

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in canvas pixels."""
        return self.tex.shape[0], self.tex.shape[1]


def _rgb(colour: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in colour)


def _stripes(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    period = rng.uniform(0.012, 0.05)
    angle = rng.choice([0.0, math.pi / 2, rng.uniform(0.3, 1.2)])
    phase = (cv.xx * math.sin(angle) + cv.yy * math.cos(angle)) / period
    duty = rng.uniform(0.3, 0.6)
    cv.tex[(phase % 1) < duty] = c[1]
    if rng.random() < 0.4:
        cv.tex[(phase % 2) < duty * 0.3] = c[2]


def _checks(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    period = rng.uniform(0.02, 0.06)
    tex = cv.tex
    a = ((cv.xx / period) % 1) < 0.5
    b = ((cv.yy / period) % 1) < 0.5
    tex[a] = tex[a] * 0.5 + c[1] * 0.5
    tex[b] = tex[b] * 0.5 + c[1] * 0.5
    line = (((cv.xx / period) % 1) < 0.06) | (((cv.yy / period) % 1) < 0.06)
    tex[line] = c[2]


def _dots(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    """The plain print: scattered dots in two of the garment's colours."""
    th, tw = cv.size
    r = rng.uniform(0.004, 0.012)
    n = int(tw * th / (cv.scale * r * 6) ** 2)
    for _ in range(n):
        centre = (int(rng.uniform(0, tw)), int(rng.uniform(0, th)))
        colour = _rgb(c[int(rng.integers(1, 3))])
        cv2.circle(cv.tex, centre, max(1, int(r * cv.scale * rng.uniform(0.6, 1.3))), colour, -1, cv2.LINE_AA)


def _floral(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    th, tw = cv.size
    tex = cv.tex
    for _ in range(int(tw * th / (0.045 * cv.scale) ** 2)):
        cx, cy = rng.uniform(0, tw), rng.uniform(0, th)
        size = rng.uniform(0.008, 0.022) * cv.scale
        petal = _rgb(c[int(rng.integers(1, 5))])
        for j in range(5):
            ang = j * 72 + rng.uniform(0, 72)
            px = cx + math.cos(math.radians(ang)) * size
            py = cy + math.sin(math.radians(ang)) * size
            axes = (int(size * 0.9), int(size * 0.45))
            cv2.ellipse(tex, (int(px), int(py)), axes, ang, 0, 360, petal, -1, cv2.LINE_AA)
        cv2.circle(tex, (int(cx), int(cy)), int(size * 0.4), _rgb(c[4]), -1, cv2.LINE_AA)
        for _ in range(2):
            leaf = (int(cx + rng.uniform(-2, 2) * size), int(cy + rng.uniform(-2, 2) * size))
            axes = (int(size * 0.7), int(size * 0.25))
            cv2.ellipse(tex, leaf, axes, rng.uniform(0, 180), 0, 360, _rgb(c[3]), -1, cv2.LINE_AA)


def _leopard(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    th, tw = cv.size
    scale = cv.scale
    for _ in range(int(tw * th / (0.02 * scale) ** 2)):
        centre = (int(rng.uniform(0, tw)), int(rng.uniform(0, th)))
        axes = (int(rng.uniform(0.004, 0.009) * scale), int(rng.uniform(0.003, 0.007) * scale))
        ang = rng.uniform(0, 180)
        cv2.ellipse(cv.tex, centre, axes, ang, 0, 360, _rgb(c[1]), -1, cv2.LINE_AA)
        rim = max(1, int(0.002 * scale))
        cv2.ellipse(cv.tex, centre, axes, ang, rng.uniform(0, 180), 300, _rgb(c[2] * 0.3), rim, cv2.LINE_AA)


def _camouflage(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    for j in range(1, 4):
        field = smooth_field(rng, cv.size, 14, 1.2)
        cv.tex[field > 0.55 + 0.05 * j] = c[j]


def _geometric(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    th, tw = cv.size
    tex = cv.tex
    step = rng.uniform(0.025, 0.05) * cv.scale
    for iy in range(int(th / step) + 1):
        for ix in range(int(tw / step) + 1):
            colour = _rgb(c[int(rng.integers(0, 5))])
            x0, y0 = int(ix * step), int(iy * step)
            shape = rng.integers(3)
            if shape == 0:
                cv2.rectangle(tex, (x0, y0), (int(x0 + step), int(y0 + step)), colour, -1)
            elif shape == 1:
                tri = np.array([[x0, y0], [x0 + step, y0], [x0 + step / 2, y0 + step]], np.int32)
                cv2.fillPoly(tex, [tri], colour, cv2.LINE_AA)
            else:
                centre = (int(x0 + step / 2), int(y0 + step / 2))
                cv2.circle(tex, centre, int(step / 2.5), colour, -1, cv2.LINE_AA)


def _lace(cv: _Canvas, c: list[np.ndarray], rng: np.random.Generator) -> None:
    """A grid of holes (what the cutout leaves out), each ringed with thread a shade darker."""
    th, tw = cv.size
    step = rng.uniform(0.009, 0.014) * cv.scale
    radius = step * rng.uniform(0.22, 0.32)
    thread = _rgb(np.clip(c[0] * 0.8, 0, 255))
    for iy in range(int(th / step) + 1):
        for ix in range(int(tw / step) + 1):
            centre = (int((ix + 0.5 * (iy % 2)) * step), int(iy * step))
            cv2.circle(cv.holes, centre, max(1, int(radius)), 255, -1)
            cv2.circle(cv.tex, centre, max(1, int(radius * 1.5)), thread, max(1, int(cv.k * 2)), cv2.LINE_AA)


# Keyed by the garment's pattern, else its fabric ("print" without a pattern is the dotted print).
_DRAW: dict[str, Callable[[_Canvas, list[np.ndarray], np.random.Generator], None]] = {
    "stripes": _stripes,
    "checks": _checks,
    "print": _dots,
    "floral": _floral,
    "leopard": _leopard,
    "camouflage": _camouflage,
    "geometric": _geometric,
    "lace": _lace,
}


def texture(g: Garment, rng: np.random.Generator, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Fabric colour (float RGB) and lace holes (uint8 0/255) on a canvas in body units."""
    scale = _TEX_SCALE * k
    th, tw = int(_TEX_H * scale), int(_TEX_W * scale)
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32) / scale
    tex = np.empty((th, tw, 3), np.float32)
    tex[:] = g.colours[0]
    canvas = _Canvas(tex, np.zeros((th, tw), np.uint8), xx, yy, scale, k)
    draw = _DRAW.get(g.pattern or g.fabric)
    if draw is not None:
        draw(canvas, g.colours, rng)
    # Folds: vertical drapes, stronger towards the hem, baked into the fabric so every view agrees.
    ripple = np.sin(xx * g.fold_freq + 2.0 * np.sin(yy * 7)) * np.clip((yy - 0.2) * 2.2, 0.15, 1.0)
    tex *= (1 - g.fold_amp * 0.5 + g.fold_amp * 0.5 * ripple)[..., None]
    tex += (
        rng.normal(0, 2, (th // 4 + 1, tw // 4 + 1, 1)).astype(np.float32).repeat(4, 0).repeat(4, 1)[:th, :tw]
    )
    return tex, canvas.holes


def warp(
    canvas: np.ndarray, cam: Camera, k: float, shape: tuple[int, int], nearest: bool = False
) -> np.ndarray:
    """A texture canvas seen through a view's camera, at frame size."""
    m = cam.matrix(_TEX_SCALE * k, _TEX_X0, _TEX_Y0)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(canvas, m, (shape[1], shape[0]), flags=flags, borderMode=cv2.BORDER_REFLECT)

"""The synthetic studio: mannequin shots with retoucher cutouts, made procedurally, in the data contract.

A garment is a set of parameters drawn once (type, shape, fabric, colours, hard cases) and rendered in the
three views through a per-view camera (Front; FrontRight foreshortened with the far arm behind the body;
Back mirrored, without neckline or buttons). Shapes live in "body units": y runs from the top of the head
(0) to the soles (1), x from the centre line. Every garment draws from its own RNG seeded by
(seed, garment index), and the parent decides ids, types and hard cases, so a seed gives the same bytes
whatever the number of workers.

Hard cases (tags in `garments.csv` and the index, shares from `synth.hard_cases`):
- low_contrast: the garment colour is close to the mannequin finish or to the backdrop;
- complex_pattern: busy multi-colour prints (florals, leopard, camouflage, geometric) using the
  backdrop's and the mannequin's colours;
- dip_hem: a back layer hanging lower than the front, seen behind the legs in Front/FrontRight;
- noisy_truth: the cutout is wrong as in the real archive: the dip hem's back layer is missing from it,
  or it is a few pixels too thin under the arms.
"""

from __future__ import annotations

import csv
import logging
import math
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from garmentseg.config import VIEWS, Config, HardCaseConfig
from garmentseg.data.contract import CUTOUT_DIR, GARMENTS_CSV, RAW_DIR, ShotKey
from garmentseg.imageio import write_png

log = logging.getLogger(__name__)

GARMENT_TYPES = ("dress", "skirt", "top", "trousers", "jacket", "coat")
HARD_CASES = ("low_contrast", "complex_pattern", "dip_hem", "noisy_truth")
_DIP_TYPES = ("dress", "skirt", "top", "coat")
_FABRICS = ("solid", "stripes", "checks", "print", "lace", "sheer", "fur")
_FABRIC_WEIGHTS = (0.3, 0.15, 0.13, 0.15, 0.1, 0.08, 0.09)
_COMPLEX = ("floral", "leopard", "camouflage", "geometric")
_REF_HEIGHT = 1728  # sizes in pixels below are for a 1728-high frame and scale with the frame

# Label values of the render's label map.
_BG, _MANNEQUIN, _GARMENT, _BACK_LAYER = 0, 1, 2, 3


@dataclass(frozen=True)
class GarmentSpec:
    """What the parent decides for one garment; everything else comes from its own RNG."""

    index: int
    seed: int
    garment_id: str
    garment_type: str
    tags: tuple[str, ...]

    @property
    def difficulty(self) -> str:
        return ",".join(self.tags) if self.tags else "normal"


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    garments: int
    pairs: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else float("inf")


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def plan_garments(garments: int, seed: int, hard_cases: HardCaseConfig) -> list[GarmentSpec]:
    """Ids, types and hard-case tags for a batch: exactly round(share * garments) garments per tag."""
    master = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    tags: list[list[str]] = [[] for _ in range(garments)]
    for name in HARD_CASES:
        count = round(getattr(hard_cases, name) * garments)
        if name == "noisy_truth":
            # Half the noisy truths come from a dip hem whose back layer the retoucher missed.
            dips = [i for i in range(garments) if "dip_hem" in tags[i]]
            others = [i for i in range(garments) if "dip_hem" not in tags[i]]
            n_dip = min(len(dips), count // 2)
            chosen = list(master.permutation(dips)[:n_dip]) + list(
                master.permutation(others)[: count - n_dip]
            )
        else:
            chosen = list(master.permutation(garments)[:count])
        for i in chosen:
            tags[int(i)].append(name)
    cycle = master.permutation(garments)  # types in turn, so every type gets its share
    specs = []
    for i in range(garments):
        rng = _rng(seed, i + 1)
        garment_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        choices = _DIP_TYPES if "dip_hem" in tags[i] else GARMENT_TYPES
        garment_type = choices[int(cycle[i]) % len(choices)]
        specs.append(GarmentSpec(i, seed, garment_id, garment_type, tuple(tags[i])))
    return specs


# ---------------------------------------------------------------------------------------------- geometry


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _ribbon(points: list[tuple[float, float]], widths: list[float]) -> np.ndarray:
    """A tapered band around a polyline (an arm, a sleeve, a stand)."""
    p = np.asarray(points, float)
    d = np.gradient(p, axis=0)
    n = np.stack([-d[:, 1], d[:, 0]], axis=1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
    w = np.asarray(widths, float)[:, None] / 2
    return np.concatenate([p + n * w, (p - n * w)[::-1]])


def _mirror(half: list[tuple[float, float]]) -> np.ndarray:
    """Close a left half-outline (top centre -> bottom centre, x <= 0) into a symmetric polygon."""
    left = np.asarray(half, float)
    right = left[::-1].copy()
    right[:, 0] *= -1
    return np.concatenate([left, right[1:-1]])


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


@dataclass(frozen=True)
class _Body:
    shoulder: float
    bust: float
    waist: float
    hip: float
    arms: bool
    finish: tuple[float, float, float]

    def arm_line(self, side: int) -> list[tuple[float, float]]:
        s = self.shoulder
        return [(side * (s - 0.012), 0.19), (side * (s + 0.012), 0.35), (side * (s + 0.026), 0.5)]


@dataclass
class _Garment:
    kind: str
    tags: tuple[str, ...]
    ease: float
    neck_hw: float
    neck_depth: float
    neck_shape: str
    sleeve: str  # none | short | three_quarter | long
    hem: float
    hem_back: float
    flare: float
    waist_y: float
    leg_hw: float
    opening: float  # y where a jacket/coat closes (0: closed)
    buttons: int
    fabric: str
    colours: list[np.ndarray]
    pattern: str
    fold_amp: float
    fold_freq: float
    sheer_part: str
    lace_part: str
    fur_len: float
    noisy: str  # "" | back_layer | thin_arms


def _body(rng: np.random.Generator) -> _Body:
    finish = [
        (226, 193, 163),
        (236, 234, 230),
        (42, 40, 42),
    ][int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
    jitter = rng.normal(0, 5, 3)
    return _Body(
        shoulder=float(rng.uniform(0.108, 0.122)),
        bust=float(rng.uniform(0.086, 0.098)),
        waist=float(rng.uniform(0.066, 0.078)),
        hip=float(rng.uniform(0.094, 0.108)),
        arms=bool(rng.random() < 0.85),
        finish=tuple(float(np.clip(c + j, 0, 255)) for c, j in zip(finish, jitter, strict=True)),
    )


def _colour_far_from(rng: np.random.Generator, avoid: list[np.ndarray], min_dist: float) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(60):
        hsv = np.array([[[rng.uniform(0, 180), rng.uniform(40, 230), rng.uniform(35, 235)]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        d = min(float(np.linalg.norm(rgb - a)) for a in avoid)
        if d >= min_dist:
            return rgb
        if d > best_d:
            best, best_d = rgb, d
    return best


def _colour_near(rng: np.random.Generator, target: np.ndarray, dist: float) -> np.ndarray:
    direction = rng.normal(0, 1, 3)
    direction /= np.linalg.norm(direction)
    c = np.clip(target + direction * dist, 0, 255)
    if np.linalg.norm(c - target) < dist * 0.7:  # clipped against a bound: go the other way
        c = np.clip(target - direction * dist, 0, 255)
    return c.astype(np.float32)


def _garment(spec: GarmentSpec, rng: np.random.Generator, body: _Body, backdrop: np.ndarray) -> _Garment:
    kind, tags = spec.garment_type, spec.tags
    finish = np.array(body.finish, np.float32)
    if "low_contrast" in tags:
        target = finish if rng.random() < 0.5 else backdrop
        base = _colour_near(rng, target, float(rng.uniform(24, 40)))
    else:
        base = _colour_far_from(rng, [finish, backdrop], 75.0)
    fabric = str(rng.choice(_FABRICS, p=_FABRIC_WEIGHTS))
    pattern = ""
    if "complex_pattern" in tags:
        fabric, pattern = "print", str(rng.choice(_COMPLEX))
    elif "low_contrast" in tags and fabric in ("print", "checks"):
        fabric = "solid"
    colours = [base]
    for _ in range(4):
        if pattern:
            # Busy prints borrow the surroundings' colours: the hard part of a complicated pattern.
            pick = rng.random()
            src = backdrop if pick < 0.25 else finish if pick < 0.45 else None
            colours.append(
                _colour_near(rng, src, 30.0) if src is not None else _colour_far_from(rng, [base], 60.0)
            )
        else:
            colours.append(_colour_far_from(rng, [base], 50.0))
    dip = "dip_hem" in tags
    hem = {
        "dress": rng.uniform(0.58, 0.86),
        "skirt": rng.uniform(0.58, 0.86),
        "top": rng.uniform(0.44, 0.54),
        "trousers": rng.uniform(0.9, 0.955),
        "jacket": rng.uniform(0.47, 0.56),
        "coat": rng.uniform(0.68, 0.86),
    }[kind]
    if dip and kind == "top":
        hem = min(hem, 0.48)
    sleeve = {
        "dress": rng.choice(["none", "short", "three_quarter", "long"], p=[0.4, 0.3, 0.1, 0.2]),
        "top": rng.choice(["none", "short", "three_quarter", "long"], p=[0.3, 0.35, 0.1, 0.25]),
        "jacket": "long",
        "coat": "long",
    }.get(kind, "none")
    noisy = ""
    if "noisy_truth" in tags:
        noisy = "back_layer" if dip else "thin_arms"
    return _Garment(
        kind=kind,
        tags=tags,
        ease=float(rng.uniform(0.006, 0.02)) + (0.012 if kind == "coat" else 0.0),
        neck_hw=float(rng.uniform(0.032, 0.05)),
        neck_depth=float(rng.uniform(0.02, 0.09)),
        neck_shape=str(rng.choice(["scoop", "v", "boat"])),
        sleeve=str(sleeve),
        hem=float(hem),
        hem_back=float(hem + rng.uniform(0.08, 0.16)) if dip else float(hem),
        flare=float(rng.uniform(0.0, 0.14)) if kind in ("dress", "skirt", "coat") else 0.0,
        waist_y=float(rng.uniform(0.35, 0.39)),
        leg_hw=float(rng.uniform(0.032, 0.07)),
        opening=float(rng.uniform(0.29, 0.36)) if kind in ("jacket", "coat") else 0.0,
        buttons=int(rng.integers(3, 6)) if kind in ("jacket", "coat") or rng.random() < 0.25 else 0,
        fabric=fabric,
        colours=colours,
        pattern=pattern,
        fold_amp=float(rng.uniform(0.04, 0.16)),
        fold_freq=float(rng.uniform(25, 60)),
        sheer_part=str(rng.choice(["sleeves", "skirt", "yoke"])) if fabric == "sheer" else "",
        lace_part=str(rng.choice(["hem", "yoke", "all", "sleeves"])) if fabric == "lace" else "",
        fur_len=float(rng.uniform(0.006, 0.014)) if fabric == "fur" else 0.0,
        noisy=noisy,
    )


def _hem_line(x0: float, x1: float, y: float, g: _Garment, phase: float, n: int = 14) -> list:
    """A hem from x0 to x1 that dips towards the centre (perspective) and waves with the folds."""
    xs = np.linspace(x0, x1, n)
    half = max(abs(x0), abs(x1), 1e-6)
    ys = y + 0.012 * (1 - (xs / half) ** 2) + 0.004 * g.fold_amp * 5 * np.sin(xs * g.fold_freq + phase)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _upper_half(body: _Body, g: _Garment, hem: float, view: str) -> list[tuple[float, float]]:
    """Left half-outline of a top, dress, jacket or coat (x <= 0), from the neck to the hem centre."""
    e = g.ease
    top = 0.158 if view == "Back" else 0.152
    pts: list[tuple[float, float]] = [(0.0, top), (-g.neck_hw, 0.15)]
    if g.sleeve == "none" and g.kind in ("dress", "top"):
        strap = -max(g.neck_hw + 0.025, body.shoulder - 0.03)
        pts += [(strap, 0.165), (strap + 0.004, 0.19), (-(body.bust + e * 0.5), 0.245)]
    else:
        pts += [(-(body.shoulder + e), 0.182), (-(body.shoulder + e * 0.8), 0.215), (-(body.bust + e), 0.25)]
    waist = body.waist + e + (0.02 if g.kind in ("jacket", "coat", "top") else 0.0)
    pts.append((-waist, g.waist_y))
    flare = g.flare + (0.02 if g.kind == "coat" else 0.0)
    if hem > 0.45:
        pts.append((-(body.hip + e), 0.47))
    hem_hw = body.hip + e + flare * (hem - 0.47) / 0.4 if hem > 0.5 else -pts[-1][0] + 0.005
    pts += _hem_line(-hem_hw, 0.0, hem, g, phase=0.0, n=8)
    return pts


def _skirt_half(body: _Body, g: _Garment, hem: float) -> list[tuple[float, float]]:
    e = g.ease
    hem_hw = body.hip + e + g.flare * (hem - 0.47) / 0.4
    pts = [(0.0, g.waist_y - 0.01), (-(body.waist + e + 0.004), g.waist_y - 0.012), (-(body.hip + e), 0.47)]
    return pts + _hem_line(-hem_hw, 0.0, hem, g, phase=0.0, n=8)


def _trousers(body: _Body, g: _Garment) -> np.ndarray:
    e = g.ease
    out_hem = 0.045 + g.leg_hw
    in_hem = max(0.045 - g.leg_hw, 0.004)
    left = [
        (0.0, g.waist_y - 0.01),
        (-(body.waist + e + 0.004), g.waist_y - 0.012),
        (-(body.hip + e), 0.47),
        (-(body.hip + e - 0.004), 0.6),
        (-(out_hem + 0.01), 0.75),
        (-out_hem, g.hem),
        (-in_hem, g.hem + 0.004),
        (-max(in_hem, 0.012), 0.72),
        (-0.006, 0.545),
        (0.0, 0.535),
    ]
    return _mirror(left)


def _legs_open_between(g: _Garment) -> np.ndarray:
    """The gap between trouser legs (the mannequin and the stand show through)."""
    in_hem = max(0.045 - g.leg_hw, 0.004)
    return np.array([(0.0, 0.55), (-in_hem * 0.4, g.hem + 0.01), (in_hem * 0.4, g.hem + 0.01)])


def _neckline(g: _Garment) -> np.ndarray:
    d, w = g.neck_depth, g.neck_hw
    if g.neck_shape == "v":
        return np.array([(-w, 0.1), (w, 0.1), (w, 0.15), (0.0, 0.15 + d), (-w, 0.15)])
    if g.neck_shape == "boat":
        return _ellipse(0.0, 0.15, w + 0.02, 0.012 + d * 0.2)
    return _ellipse(0.0, 0.15, w, 0.01 + d * 0.6)


def _opening(g: _Garment, body: _Body) -> np.ndarray:
    """Jacket/coat front: lapels open from the neck to the top button."""
    return np.array(
        [(-g.neck_hw - 0.004, 0.12), (g.neck_hw + 0.004, 0.12), (0.004, g.opening), (-0.004, g.opening)]
    )


def _sleeves(body: _Body, g: _Garment) -> dict[int, np.ndarray]:
    end = {"none": 0.0, "short": 0.27, "three_quarter": 0.42, "long": 0.505}[g.sleeve]
    if end == 0:
        return {}
    out = {}
    for side in (-1, 1):
        line = body.arm_line(side)
        pts, widths = [line[0]], [0.066 + g.ease]
        t = np.linspace(0.19, end, 6)[1:]
        for y in t:
            if y <= 0.35:
                x = line[0][0] + (line[1][0] - line[0][0]) * (y - 0.19) / 0.16
            else:
                x = line[1][0] + (line[2][0] - line[1][0]) * (y - 0.35) / 0.15
            pts.append((x, float(y)))
            widths.append(0.05 + g.ease + (0.35 - min(y, 0.35)) * 0.05)
        poly = _ribbon(pts, widths)
        out[side] = np.concatenate([[(side * (body.shoulder - 0.03), 0.175)], poly])
    return out


def _mannequin_parts(body: _Body) -> dict[str, np.ndarray]:
    s, b, w, h = body.shoulder, body.bust, body.waist, body.hip
    torso = _mirror(
        [
            (0.0, 0.15),
            (-0.03, 0.152),
            (-(s - 0.02), 0.172),
            (-s, 0.19),
            (-(b + 0.004), 0.24),
            (-b, 0.28),
            (-w, 0.37),
            (-h, 0.47),
            (-(h - 0.006), 0.51),
            (0.0, 0.53),
        ]
    )
    legs = []
    for side in (-1, 1):
        leg = [
            (side * (h - 0.004), 0.49),
            (side * 0.083, 0.6),
            (side * 0.066, 0.73),
            (side * 0.056, 0.85),
            (side * 0.043, 0.955),
            (side * 0.046, 0.995),
            (side * 0.012, 0.995),
            (side * 0.02, 0.955),
            (side * 0.02, 0.85),
            (side * 0.016, 0.73),
            (side * 0.007, 0.545),
            (0.0, 0.52),
        ]
        legs.append(np.array(leg))
    neck = np.array([(-0.026, 0.1), (0.026, 0.1), (0.031, 0.17), (-0.031, 0.17)])
    head = _ellipse(0.0, 0.066, 0.046, 0.066)
    parts = {"torso": torso, "leg_l": legs[0], "leg_r": legs[1], "neck": neck, "head": head}
    if body.arms:
        for side, name in ((-1, "arm_l"), (1, "arm_r")):
            line = body.arm_line(side)
            arm = _ribbon(line, [0.05, 0.036, 0.03])
            hand = _ellipse(line[2][0] + side * 0.002, 0.54, 0.018, 0.042, 24)
            parts[name] = np.concatenate([arm, [(line[0][0] - side * 0.01, 0.175)]])
            parts[name.replace("arm", "hand")] = hand
    return parts


# ------------------------------------------------------------------------------------------------ camera


@dataclass(frozen=True)
class _Camera:
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


def _camera(rng: np.random.Generator, kind: str, view: str, width: int, height: int) -> _Camera:
    if kind in ("top", "jacket", "skirt"):
        y_top, y_bottom = -0.03, 0.83
    else:
        y_top, y_bottom = -0.05, 1.1
    u = height / (y_bottom - y_top) * float(rng.uniform(0.97, 1.02))
    ox = width / 2 + float(rng.normal(0, 0.01)) * u
    oy = -y_top * u + float(rng.normal(0, 0.006)) * u
    squeeze = {"Front": 1.0, "FrontRight": 0.8, "Back": -1.0}[view]
    return _Camera(ox, oy, squeeze * u, u)


# ------------------------------------------------------------------------------------------------ raster


def _cover(polys: list[np.ndarray], cam: _Camera, shape: tuple[int, int]) -> np.ndarray:
    """Antialiased coverage (uint8 0..255) of polygons given in body units."""
    canvas = np.zeros(shape, np.uint8)
    for poly in polys:  # one call each: fillPoly treats several contours even-odd (overlaps cancel)
        cv2.fillPoly(canvas, [np.round(cam.px(poly) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return canvas


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, blur: float) -> np.ndarray:
    """Low-frequency noise in 0..1 at full size (made small, blurred, upscaled)."""
    small = rng.random((cells * 3 // 2 + 2, cells + 2)).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), blur)
    small = (small - small.min()) / (np.ptp(small) + 1e-6)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _roundness(cover: np.ndarray, sigma_px: float) -> np.ndarray:
    """A blurred silhouette: ~1 deep inside a part, ~0.5 at its edge; cheap shading for round forms."""
    h, w = cover.shape
    small = cv2.resize(cover, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    small = cv2.GaussianBlur(small, (0, 0), max(sigma_px / 4, 0.5))
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _paint(
    img: np.ndarray,
    label: np.ndarray,
    cover: np.ndarray,
    colour: np.ndarray,
    value: int,
    opacity: float = 1.0,
    shade: np.ndarray | None = None,
) -> None:
    """Composite a colour (full-frame array or one RGB) through a coverage, optionally shaded."""
    x, y, w, h = cv2.boundingRect(cover)
    if w == 0 or h == 0:
        return
    sl = (slice(y, y + h), slice(x, x + w))
    a = cover[sl].astype(np.float32)[..., None] * (opacity / 255.0)
    col = colour[sl] if colour.ndim == 3 else colour
    if shade is not None:
        col = col * shade[sl][..., None]
    img[sl] = img[sl] * (1 - a) + col * a
    label[sl][cover[sl] >= 128] = value


# -------------------------------------------------------------------------------------------- the studio


def _backdrop(
    rng: np.random.Generator, shape: tuple[int, int], floor_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Paper sweep with gradient and folds, the floor, and the wall beyond the paper's edges."""
    h, w = shape
    kind = rng.choice(["white", "light_grey", "grey", "beige", "blue"], p=[0.3, 0.3, 0.15, 0.15, 0.1])
    base = {
        "white": (238, 238, 236),
        "light_grey": (212, 212, 210),
        "grey": (168, 170, 172),
        "beige": (222, 208, 188),
        "blue": (196, 212, 228),
    }[str(kind)]
    colour = np.clip(np.array(base, np.float32) + rng.normal(0, 4, 3), 0, 255).astype(np.float32)
    sh, sw = h // 8, w // 8
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    yy /= sh
    xx /= sw
    shade = 1.0 + 0.05 * (0.5 - yy)
    for _ in range(int(rng.integers(2, 6))):  # hanging folds of the sheet
        x0 = rng.uniform(0, 1)
        width = rng.uniform(0.01, 0.04)
        shade += rng.uniform(-0.05, 0.04) * np.exp(-(((xx - x0) / width) ** 2)) * (1 - 0.6 * yy)
    fy = floor_y / h
    sweep = 1 / (1 + np.exp(-(yy - fy) / 0.015))
    shade *= 1 - 0.07 * sweep + 0.05 * sweep * (yy - fy)
    shade += 0.015 * (_smooth_field(rng, (sh, sw), 6, 1.5) - 0.5)
    bg = cv2.resize(shade, (w, h), interpolation=cv2.INTER_LINEAR)[..., None] * colour
    if rng.random() < 0.6:  # the wall shows beyond the paper on one or both sides, above the floor
        wall = np.clip(colour * rng.uniform(0.55, 0.8) + rng.normal(0, 6, 3), 0, 255).astype(np.float32)
        cols = np.zeros(w, bool)
        if rng.random() < 0.7:
            cols[: int(rng.uniform(0.02, 0.12) * w)] = True
        if rng.random() < 0.7:
            cols[w - int(rng.uniform(0.02, 0.12) * w) :] = True
        top = int(floor_y - rng.uniform(0.02, 0.08) * h)
        region = bg[:top, cols]
        bg[:top, cols] = wall * (region / colour).mean(axis=-1, keepdims=True) * 0.97
    return bg, colour


def _stands_and_wires(img: np.ndarray, rng: np.random.Generator, cam: _Camera, floor_y: float) -> None:
    h, w = img.shape[:2]
    k = h / _REF_HEIGHT
    for side in (-1, 1):
        if rng.random() < 0.55:
            x = w / 2 + side * w * rng.uniform(0.36, 0.47)
            top = rng.uniform(0.0, 0.3) * h
            dark = float(rng.uniform(25, 70))
            cv2.line(
                img, (int(x), int(top)), (int(x), int(floor_y)), (dark,) * 3, max(1, int(9 * k)), cv2.LINE_AA
            )
            for dx in (-60, 0, 60):  # tripod legs
                end = (int(x + dx * k * rng.uniform(0.8, 1.2)), int(floor_y + 40 * k))
                cv2.line(
                    img, (int(x), int(floor_y - 60 * k)), end, (dark,) * 3, max(1, int(5 * k)), cv2.LINE_AA
                )
            if rng.random() < 0.5:  # a softbox edge coming into frame
                y0 = int(top - 10 * k)
                cv2.rectangle(
                    img,
                    (int(x - 90 * k), max(0, y0 - int(160 * k))),
                    (int(x + 90 * k), y0),
                    (dark + 20,) * 3,
                    -1,
                )
    for _ in range(int(rng.integers(0, 4))):  # thin wires holding the form, cables on the floor
        shade = float(rng.uniform(40, 150))
        if rng.random() < 0.6:
            x0 = rng.uniform(0.2, 0.8) * w
            target = cam.px(np.array([[rng.choice([-1, 1]) * 0.1, 0.18]]))[0]
            cv2.line(img, (int(x0), 0), (int(target[0]), int(target[1])), (shade,) * 3, 1, cv2.LINE_AA)
        else:
            y0 = floor_y + rng.uniform(0.0, 0.08) * h
            cv2.line(
                img,
                (0, int(y0)),
                (w, int(y0 + rng.uniform(-0.05, 0.05) * h)),
                (shade,) * 3,
                max(1, int(2 * k)),
                cv2.LINE_AA,
            )


def _turntable(img: np.ndarray, tone: float, cam: _Camera) -> None:
    top = _ellipse(0.0, 1.0, 0.27, 0.042, 72)
    bottom = top + np.array([0.0, 0.025])
    band = np.array([(-0.27, 1.0), (0.27, 1.0), (0.27, 1.025), (-0.27, 1.025)])
    h = img.shape[0]
    for poly, shade in ((bottom, 0.5), (band, 0.5), (top, 1.0)):
        pts = np.round(cam.px(poly) * 16).astype(np.int32)
        cv2.fillPoly(img, [pts], (tone * shade,) * 3, lineType=cv2.LINE_AA, shift=4)
    rim = np.round(cam.px(top) * 16).astype(np.int32)
    cv2.polylines(img, [rim], True, (tone * 0.8,) * 3, max(1, int(3 * h / _REF_HEIGHT)), cv2.LINE_AA, shift=4)


# --------------------------------------------------------------------------------------------- textures


_TEX_SCALE = 700.0  # texture canvas pixels per body unit at a 1728-high frame
_TEX_X0, _TEX_Y0, _TEX_W, _TEX_H = -0.36, 0.08, 0.72, 0.92


def _texture(g: _Garment, rng: np.random.Generator, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Fabric colour (float RGB) and lace holes (uint8 0/255) on a canvas in body units."""
    scale = _TEX_SCALE * k
    th, tw = int(_TEX_H * scale), int(_TEX_W * scale)
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32) / scale
    c = g.colours
    tex = np.empty((th, tw, 3), np.float32)
    tex[:] = c[0]
    holes = np.zeros((th, tw), np.uint8)
    if g.fabric == "stripes":
        period = rng.uniform(0.012, 0.05)
        angle = rng.choice([0.0, math.pi / 2, rng.uniform(0.3, 1.2)])
        phase = (xx * math.sin(angle) + yy * math.cos(angle)) / period
        duty = rng.uniform(0.3, 0.6)
        tex[(phase % 1) < duty] = c[1]
        if rng.random() < 0.4:
            tex[(phase % 2) < duty * 0.3] = c[2]
    elif g.fabric == "checks":
        period = rng.uniform(0.02, 0.06)
        a = ((xx / period) % 1) < 0.5
        b = ((yy / period) % 1) < 0.5
        tex[a] = tex[a] * 0.5 + c[1] * 0.5
        tex[b] = tex[b] * 0.5 + c[1] * 0.5
        line = (((xx / period) % 1) < 0.06) | (((yy / period) % 1) < 0.06)
        tex[line] = c[2]
    elif g.fabric == "print" and not g.pattern:
        r = rng.uniform(0.004, 0.012)
        n = int(tw * th / (scale * r * 6) ** 2)
        for _ in range(n):
            centre = (int(rng.uniform(0, tw)), int(rng.uniform(0, th)))
            colour = tuple(float(v) for v in c[int(rng.integers(1, 3))])
            cv2.circle(tex, centre, max(1, int(r * scale * rng.uniform(0.6, 1.3))), colour, -1, cv2.LINE_AA)
    elif g.pattern == "floral":
        for _ in range(int(tw * th / (0.045 * scale) ** 2)):
            cx, cy = rng.uniform(0, tw), rng.uniform(0, th)
            size = rng.uniform(0.008, 0.022) * scale
            petal = tuple(float(v) for v in c[int(rng.integers(1, 5))])
            for j in range(5):
                ang = j * 72 + rng.uniform(0, 72)
                px = cx + math.cos(math.radians(ang)) * size
                py = cy + math.sin(math.radians(ang)) * size
                cv2.ellipse(
                    tex,
                    (int(px), int(py)),
                    (int(size * 0.9), int(size * 0.45)),
                    ang,
                    0,
                    360,
                    petal,
                    -1,
                    cv2.LINE_AA,
                )
            cv2.circle(
                tex, (int(cx), int(cy)), int(size * 0.4), tuple(float(v) for v in c[4]), -1, cv2.LINE_AA
            )
            for _ in range(2):
                leaf = (int(cx + rng.uniform(-2, 2) * size), int(cy + rng.uniform(-2, 2) * size))
                cv2.ellipse(
                    tex,
                    leaf,
                    (int(size * 0.7), int(size * 0.25)),
                    rng.uniform(0, 180),
                    0,
                    360,
                    tuple(float(v) for v in c[3]),
                    -1,
                    cv2.LINE_AA,
                )
    elif g.pattern == "leopard":
        for _ in range(int(tw * th / (0.02 * scale) ** 2)):
            centre = (int(rng.uniform(0, tw)), int(rng.uniform(0, th)))
            axes = (int(rng.uniform(0.004, 0.009) * scale), int(rng.uniform(0.003, 0.007) * scale))
            ang = rng.uniform(0, 180)
            cv2.ellipse(tex, centre, axes, ang, 0, 360, tuple(float(v) for v in c[1]), -1, cv2.LINE_AA)
            cv2.ellipse(
                tex,
                centre,
                axes,
                ang,
                rng.uniform(0, 180),
                300,
                tuple(float(v) for v in c[2] * 0.3),
                max(1, int(0.002 * scale)),
                cv2.LINE_AA,
            )
    elif g.pattern == "camouflage":
        for j in range(1, 4):
            field = _smooth_field(rng, (th, tw), 14, 1.2)
            tex[field > 0.55 + 0.05 * j] = c[j]
    elif g.pattern == "geometric":
        step = rng.uniform(0.025, 0.05) * scale
        for iy in range(int(th / step) + 1):
            for ix in range(int(tw / step) + 1):
                colour = tuple(float(v) for v in c[int(rng.integers(0, 5))])
                x0, y0 = int(ix * step), int(iy * step)
                shape = rng.integers(3)
                if shape == 0:
                    cv2.rectangle(tex, (x0, y0), (int(x0 + step), int(y0 + step)), colour, -1)
                elif shape == 1:
                    tri = np.array([[x0, y0], [x0 + step, y0], [x0 + step / 2, y0 + step]], np.int32)
                    cv2.fillPoly(tex, [tri], colour, cv2.LINE_AA)
                else:
                    cv2.circle(
                        tex,
                        (int(x0 + step / 2), int(y0 + step / 2)),
                        int(step / 2.5),
                        colour,
                        -1,
                        cv2.LINE_AA,
                    )
    if g.fabric == "lace":
        step = rng.uniform(0.009, 0.014) * scale
        radius = step * rng.uniform(0.22, 0.32)
        thread = tuple(float(v) for v in np.clip(c[0] * 0.8, 0, 255))
        for iy in range(int(th / step) + 1):
            for ix in range(int(tw / step) + 1):
                centre = (int((ix + 0.5 * (iy % 2)) * step), int(iy * step))
                cv2.circle(holes, centre, max(1, int(radius)), 255, -1)
                cv2.circle(tex, centre, max(1, int(radius * 1.5)), thread, max(1, int(k * 2)), cv2.LINE_AA)
    # Folds: vertical drapes, stronger towards the hem, baked into the fabric so every view agrees.
    ripple = np.sin(xx * g.fold_freq + 2.0 * np.sin(yy * 7)) * np.clip((yy - 0.2) * 2.2, 0.15, 1.0)
    tex *= (1 - g.fold_amp * 0.5 + g.fold_amp * 0.5 * ripple)[..., None]
    tex += (
        rng.normal(0, 2, (th // 4 + 1, tw // 4 + 1, 1)).astype(np.float32).repeat(4, 0).repeat(4, 1)[:th, :tw]
    )
    return tex, holes


def _warp(
    tex: np.ndarray, cam: _Camera, k: float, shape: tuple[int, int], nearest: bool = False
) -> np.ndarray:
    m = cam.matrix(_TEX_SCALE * k, _TEX_X0, _TEX_Y0)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(tex, m, (shape[1], shape[0]), flags=flags, borderMode=cv2.BORDER_REFLECT)


# ------------------------------------------------------------------------------------------------ render


def _view_shift(parts: dict[str, np.ndarray], view: str) -> dict[str, np.ndarray]:
    """FrontRight: the far arm (x > 0) swings behind the body, the near one in a little."""
    if view != "FrontRight":
        return parts
    out = dict(parts)
    for name, dx in (("arm_r", -0.05), ("hand_r", -0.05), ("arm_l", 0.015), ("hand_l", 0.015)):
        if name in out:
            out[name] = out[name] + [dx, 0.0]
    return out


def render_garment(
    spec: GarmentSpec, width: int, height: int, *, exact_truth: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Render one garment in every view: view -> (shot RGB uint8, ground-truth alpha uint8 0/255).

    exact_truth=True skips the retoucher's mistakes of a noisy_truth garment (same shots).
    """
    rng = _rng(spec.seed, spec.index + 1)
    rng.bytes(16)  # the garment id (plan_garments)
    k = height / _REF_HEIGHT
    shape = (height, width)
    body = _body(rng)
    studio_seed = int(rng.integers(2**31))
    floor_frac = float(rng.uniform(0.8, 0.9))
    bd_rng = np.random.default_rng(studio_seed)
    _, backdrop_colour = _backdrop(bd_rng, (16, 16), 12)
    g = _garment(spec, rng, body, backdrop_colour)
    if exact_truth:
        g.noisy = ""
    tex, holes_tex = _texture(g, rng, k)
    turntable_tone = float(rng.choice([235.0, 150.0, 45.0]))
    views = {}
    for view in VIEWS:
        vrng = np.random.default_rng(np.random.SeedSequence([spec.seed, spec.index, 1 + VIEWS.index(view)]))
        views[view] = _render_view(
            spec, g, body, view, vrng, studio_seed, floor_frac, tex, holes_tex, turntable_tone, shape, k
        )
    return views


def _render_view(
    spec: GarmentSpec,
    g: _Garment,
    body: _Body,
    view: str,
    rng: np.random.Generator,
    studio_seed: int,
    floor_frac: float,
    tex: np.ndarray,
    holes_tex: np.ndarray,
    turntable_tone: float,
    shape: tuple[int, int],
    k: float,
) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    cam = _camera(rng, g.kind, view, w, h)
    feet_y = cam.oy + cam.u * 1.0
    floor_y = min(feet_y - 0.03 * cam.u, floor_frac * h) if feet_y < h else floor_frac * h
    studio = np.random.default_rng(studio_seed)  # same studio (backdrop, stands) for the three views
    img, _ = _backdrop(studio, shape, floor_y)
    _stands_and_wires(img, studio, cam, floor_y)
    _turntable(img, turntable_tone, cam)

    parts = _view_shift(_mannequin_parts(body), view)
    back = view == "Back"
    far = "r" if view == "FrontRight" else ""
    front_layers: list[tuple[str, list[np.ndarray], int]] = []  # (name, polygons, label), bottom to top

    # The garment's main silhouette for this view.
    dip = g.hem_back > g.hem
    hem = g.hem_back if back else g.hem
    holes: list[np.ndarray] = []
    if g.kind == "trousers":
        main = [_trousers(body, g)]
        holes.append(_legs_open_between(g))
    elif g.kind == "skirt":
        main = [_mirror(_skirt_half(body, g, hem))]
    else:
        main = [_mirror(_upper_half(body, g, hem, view))]
        if g.kind == "dress" and hem > 0.5:
            main.append(_mirror(_skirt_half(body, g, hem)))
    if not back:
        if g.kind in ("jacket", "coat"):
            holes.append(_opening(g, body))
        elif g.kind in ("dress", "top"):
            holes.append(_neckline(g))
    if view == "FrontRight":  # the centre front turns towards the far side
        holes = [p + np.array([0.025, 0.0]) for p in holes]
    sleeves = _sleeves(body, g)

    if dip and not back:
        if g.kind == "skirt":
            layer = _mirror(_skirt_half(body, g, g.hem_back))
        else:
            layer = _mirror(_upper_half(body, g, g.hem_back, view))
        layer[:, 0] *= 1.04
        if view == "FrontRight":
            layer[:, 0] += 0.02
        front_layers.append(("back_layer", [layer], _BACK_LAYER))
    stand = _ribbon([(0.0, 1.0), (0.0, 0.6)], [0.014, 0.012])
    front_layers.append(("stand", [stand], _MANNEQUIN))
    if far and body.arms:
        front_layers.append(("far_arm", [parts["arm_r"], parts["hand_r"]], _MANNEQUIN))
        if 1 in sleeves:
            front_layers.append(("far_sleeve", [sleeves[1]], _GARMENT))
    body_parts = [parts[n] for n in ("leg_l", "leg_r", "torso", "neck", "head")]
    front_layers.append(("body", body_parts, _MANNEQUIN))
    front_layers.append(("garment", main, _GARMENT))
    near_sides = [-1] if far else [-1, 1]
    if body.arms:
        arms = [parts[n] for s in near_sides for n in (("arm_l", "hand_l") if s < 0 else ("arm_r", "hand_r"))]
        front_layers.append(("arms", arms, _MANNEQUIN))
    near_sleeves = [sleeves[s] for s in near_sides if s in sleeves]
    if near_sleeves:
        front_layers.append(("sleeves", near_sleeves, _GARMENT))

    covers = {name: _cover(polys, cam, shape) for name, polys, _ in front_layers}
    if holes:
        hole_cover = _cover(holes, cam, shape)
        covers["garment"] = np.minimum(covers["garment"], 255 - hole_cover)
    if g.fabric == "lace":
        lace = _warp(holes_tex, cam, k, shape, nearest=True)
        region = {
            "hem": _cover([np.array([(-1, hem - 0.12), (1, hem - 0.12), (1, 1.2), (-1, 1.2)])], cam, shape),
            "yoke": _cover([np.array([(-1, 0.0), (1, 0.0), (1, 0.27), (-1, 0.27)])], cam, shape),
            "all": np.full(shape, 255, np.uint8),
            "sleeves": _cover(list(sleeves.values()), cam, shape),
        }[g.lace_part]
        lace = np.minimum(lace, region)
        for name in ("garment", "sleeves", "far_sleeve", "back_layer"):
            if name in covers:
                covers[name] = np.minimum(covers[name], 255 - lace)
    if g.fabric == "fur":
        _fur(covers, rng, g, k)

    # Soft shadow of everything on the sweep and the turntable.
    union = np.maximum.reduce(list(covers.values()))
    small = cv2.resize(union, (w // 8, h // 8), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    m = np.float32([[1, 0, rng.uniform(-4, 10) * k * 2], [0, 1, rng.uniform(2, 8) * k * 2]])
    small = cv2.warpAffine(small, m, (w // 8, h // 8))
    small = cv2.GaussianBlur(small, (0, 0), 6 * k + 1)
    shadow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img *= (1 - float(rng.uniform(0.12, 0.28)) * shadow)[..., None]

    label = np.zeros(shape, np.uint8)
    finish = np.array(body.finish, np.float32)
    man_round = _roundness(
        np.maximum.reduce([covers[n] for n, _, v in front_layers if v == _MANNEQUIN]), 18 * k
    )
    man_shade = 0.62 + 0.45 * np.sqrt(np.clip(man_round, 0, 1))
    fabric = _warp(tex, cam, k, shape)
    garm_round = _roundness(
        np.maximum.reduce([covers[n] for n, _, v in front_layers if v != _MANNEQUIN]), 30 * k
    )
    garm_shade = 0.7 + 0.34 * np.sqrt(np.clip(garm_round, 0, 1))
    for name, _, value in front_layers:
        colour, shade = (finish, man_shade) if value == _MANNEQUIN else (fabric, garm_shade)
        if name == "back_layer":
            shade = garm_shade * 0.8  # the inside of the back layer sits in shade
        opacity = 1.0
        if g.fabric == "sheer" and (
            (g.sheer_part == "sleeves" and name in ("sleeves", "far_sleeve"))
            or (
                g.sheer_part == "skirt" and name in ("garment", "back_layer") and g.kind in ("skirt", "dress")
            )
        ):
            opacity = 0.62
        _paint(img, label, covers[name], colour, value, opacity, shade)
        if name == "garment" and g.fabric == "sheer" and g.sheer_part == "yoke":
            yoke = np.minimum(
                covers[name], _cover([np.array([(-1, 0.0), (1, 0.0), (1, 0.25), (-1, 0.25)])], cam, shape)
            )
            _paint(img, label, yoke, finish, _GARMENT, 0.6, man_shade)
        if name == "garment" and g.buttons and not back and g.kind not in ("skirt", "trousers"):
            _buttons(img, g, cam, k)

    # Light fall-off, vignette and the key light's side, then sensor noise.
    sh, sw = h // 8, w // 8
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    side = float(rng.uniform(-0.08, 0.08))
    light = (
        1.0 + side * (xx / sw - 0.5) - 0.16 * (((xx / sw - 0.5) * 1.2) ** 2 + ((yy / sh - 0.42) * 0.9) ** 2)
    )
    img *= cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    sigma = 0.45 + 1.1 * (1 - cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) / 255)
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma[..., None]
    shot = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    truth = label >= _GARMENT
    if g.noisy == "back_layer" and not back:
        truth = label == _GARMENT
    elif g.noisy == "thin_arms":
        truth = _thin_under_arms(truth, body, cam, k)
    return shot, truth.astype(np.uint8) * 255


def _buttons(img: np.ndarray, g: _Garment, cam: _Camera, k: float) -> None:
    top = g.opening if g.opening else 0.17 + g.neck_depth
    bottom = min(g.hem, 0.75) - 0.03
    dx = 0.025 if cam.sx > 0 and abs(cam.sx) < cam.u else 0.0
    for y in np.linspace(top + 0.01, bottom, g.buttons):
        x, yp = cam.px(np.array([[dx + 0.008, y]]))[0]
        r = max(1, int(9 * k))
        dark = tuple(float(v) for v in np.clip(g.colours[2] * 0.5, 0, 255))
        cv2.circle(img, (int(x), int(yp)), r, dark, -1, cv2.LINE_AA)
        cv2.circle(
            img, (int(x - r * 0.3), int(yp - r * 0.3)), max(1, r // 3), (220.0, 220.0, 220.0), -1, cv2.LINE_AA
        )


def _fur(covers: dict[str, np.ndarray], rng: np.random.Generator, g: _Garment, k: float) -> None:
    """Fuzzy edges: short strands leaving the outline; the retoucher keeps them in the cutout."""
    for name in ("garment", "sleeves"):
        if name not in covers:
            continue
        cover = covers[name]
        contours, _ = cv2.findContours(
            (cover >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        length = g.fur_len * _REF_HEIGHT * k
        for contour in contours:
            pts = contour[:, 0, :]
            step = max(2, int(4 * k))
            for i in range(0, len(pts), step):
                p, q = pts[i], pts[(i + 6) % len(pts)]
                tangent = (q - pts[i - 6]).astype(np.float32)
                normal = np.array([tangent[1], -tangent[0]]) / (np.linalg.norm(tangent) + 1e-6)
                angle = rng.normal(0, 0.5)
                rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
                end = p + rot @ normal * length * rng.uniform(0.3, 1.0)
                cv2.line(cover, tuple(int(v) for v in p), tuple(int(v) for v in end), 255, 1, cv2.LINE_AA)


def _thin_under_arms(truth: np.ndarray, body: _Body, cam: _Camera, k: float) -> np.ndarray:
    """A retoucher's cutout a few pixels too thin under the arms."""
    band = _cover(
        [np.array([(-0.25, 0.2), (0.25, 0.2), (0.25, 0.42), (-0.25, 0.42)])],
        cam,
        truth.shape,
    ).astype(bool)
    size = max(3, round(9 * k)) | 1
    eroded = cv2.erode(truth.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    return np.where(band, eroded, truth)


# --------------------------------------------------------------------------------------------- the batch


def _render_and_write(args: tuple[GarmentSpec, Path, int, int]) -> int:
    spec, out_dir, width, height = args
    for view, (shot, alpha) in render_garment(spec, width, height).items():
        name = ShotKey(spec.garment_id, view).filename
        cutout = np.dstack([np.where(alpha[..., None] > 0, shot, 0), alpha]).astype(np.uint8)
        write_png(out_dir / RAW_DIR / name, shot)
        write_png(out_dir / CUTOUT_DIR / name, cutout)
    return len(VIEWS)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def synthesize(
    out_dir: Path,
    garments: int,
    seed: int,
    cfg: Config,
    workers: int | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
) -> SynthSummary:
    """Write a synthetic batch in the data contract (raw/, cutouts/, garments.csv) to out_dir."""
    size = cfg.sources["studio"].exact_size or (1152, 1728)
    width, height = width or size[0], height or size[1]
    out_dir = Path(out_dir)
    for side in (RAW_DIR, CUTOUT_DIR):
        (out_dir / side).mkdir(parents=True, exist_ok=True)
    specs = plan_garments(garments, seed, cfg.synth.hard_cases)
    workers = max(1, min(workers or os.cpu_count() or 1, garments))
    start = time.perf_counter()
    jobs = [(s, out_dir, width, height) for s in specs]
    bar = tqdm(total=garments, desc="synth", unit="garment", disable=None, leave=False)
    pairs = 0
    if workers == 1:
        for job in jobs:
            pairs += _render_and_write(job)
            bar.update()
    else:
        # forkserver, not fork: a forked child inherits OpenCV's thread pool locks and can hang.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
            for n in pool.map(_render_and_write, jobs):
                pairs += n
                bar.update()
    bar.close()
    with (out_dir / GARMENTS_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["garment_id", "garment_type", "difficulty"])
        for s in specs:
            writer.writerow([s.garment_id, s.garment_type, s.difficulty])
    seconds = time.perf_counter() - start
    summary = SynthSummary(out_dir, garments, pairs, seconds)
    log.info(
        "synth: %d garments, %d pairs in %.1fs (%.2f pairs/s) -> %s",
        garments,
        pairs,
        seconds,
        summary.pairs_per_second,
        out_dir,
    )
    return summary

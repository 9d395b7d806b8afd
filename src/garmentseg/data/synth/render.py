"""Render a garment in every view: layers of coverage composited over the studio, then light and noise;
the ground truth comes from the label each layer writes, with the retoucher's mistakes of a noisy truth.

Each view draws from its own RNG (seed, garment index, view), in a fixed order: camera, fur strands,
shadow, key light, sensor noise.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np

from garmentseg.config import VIEWS
from garmentseg.data.synth.garment import Body, Garment, GarmentSpec
from garmentseg.data.synth.raster import REF_HEIGHT, Camera, band, cover, paint, roundness
from garmentseg.data.synth.scene import Scene, camera, draw_scene, studio_plate
from garmentseg.data.synth.shapes import back_layer, holes, mannequin_parts, silhouette, sleeves, stand
from garmentseg.data.synth.textures import warp

# Label values of the render's label map.
_MANNEQUIN, _GARMENT, _BACK_LAYER = 1, 2, 3


class _Layer(NamedTuple):
    name: str
    polys: list[np.ndarray]
    label: int


def render_garment(
    spec: GarmentSpec, width: int, height: int, *, exact_truth: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Render one garment in every view: view -> (shot RGB uint8, ground-truth alpha uint8 0/255).

    exact_truth=True skips the retoucher's mistakes of a noisy_truth garment (same shots).
    """
    scene = draw_scene(spec, width, height, exact_truth=exact_truth)
    views = {}
    for view in VIEWS:
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, spec.index, 1 + VIEWS.index(view)]))
        views[view] = _render_view(scene, view, rng)
    return views


def _render_view(scene: Scene, view: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    g = scene.garment
    h, w = scene.shape
    cam = camera(rng, g.kind, view, w, h)
    img = studio_plate(scene, cam)
    layers, sleeve_polys = _layers(scene.body, g, view)
    covers = _covers(scene, layers, sleeve_polys, view, cam, rng)
    _shadow(img, covers, rng, scene.k)
    label = _paint_layers(img, scene, layers, covers, view, cam)
    shot = _expose(img, rng)
    return shot, _truth(label, g, view, cam, scene.k)


def _layers(body: Body, g: Garment, view: str) -> tuple[list[_Layer], dict[int, np.ndarray]]:
    """What the view shows, bottom to top, with the label each writes; and the sleeves by side."""
    parts = mannequin_parts(body, view)
    sleeve_polys = sleeves(body, g)
    far = view == "FrontRight"  # the far arm and sleeve (x > 0) are behind the body
    layers: list[_Layer] = []
    behind = back_layer(body, g, view)
    if behind is not None:
        layers.append(_Layer("back_layer", [behind], _BACK_LAYER))
    layers.append(_Layer("stand", [stand()], _MANNEQUIN))
    if far and body.arms:
        layers.append(_Layer("far_arm", [parts["arm_r"], parts["hand_r"]], _MANNEQUIN))
        if 1 in sleeve_polys:
            layers.append(_Layer("far_sleeve", [sleeve_polys[1]], _GARMENT))
    body_parts = [parts[n] for n in ("leg_l", "leg_r", "torso", "neck", "head")]
    layers.append(_Layer("body", body_parts, _MANNEQUIN))
    layers.append(_Layer("garment", silhouette(body, g, view), _GARMENT))
    near_sides = [-1] if far else [-1, 1]
    if body.arms:
        arms = [parts[n] for s in near_sides for n in (("arm_l", "hand_l") if s < 0 else ("arm_r", "hand_r"))]
        layers.append(_Layer("arms", arms, _MANNEQUIN))
    near_sleeves = [sleeve_polys[s] for s in near_sides if s in sleeve_polys]
    if near_sleeves:
        layers.append(_Layer("sleeves", near_sleeves, _GARMENT))
    return layers, sleeve_polys


def _covers(
    scene: Scene,
    layers: list[_Layer],
    sleeve_polys: dict[int, np.ndarray],
    view: str,
    cam: Camera,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Coverage of each layer, the garment's holes cut out, lace holes cut, fur strands added."""
    g, shape = scene.garment, scene.shape
    covers = {layer.name: cover(layer.polys, cam, shape) for layer in layers}
    hole_polys = holes(g, view)
    if hole_polys:
        covers["garment"] = np.minimum(covers["garment"], 255 - cover(hole_polys, cam, shape))
    if g.fabric == "lace":
        hem = g.hem_back if view == "Back" else g.hem
        lace = warp(scene.lace_holes, cam, scene.k, shape, nearest=True)
        lace = np.minimum(lace, _lace_region(g.lace_part, hem, sleeve_polys, cam, shape))
        for name in ("garment", "sleeves", "far_sleeve", "back_layer"):
            if name in covers:
                covers[name] = np.minimum(covers[name], 255 - lace)
    if g.fabric == "fur":
        _fur(covers, rng, g, scene.k)
    return covers


def _lace_region(
    part: str, hem: float, sleeve_polys: dict[int, np.ndarray], cam: Camera, shape: tuple[int, int]
) -> np.ndarray:
    """Where a lace garment is lace: above the hem, the yoke, the sleeves or all of it."""
    if part == "hem":
        return band(hem - 0.12, 1.2, cam, shape)
    if part == "yoke":
        return band(0.0, 0.27, cam, shape)
    if part == "sleeves":
        return cover(list(sleeve_polys.values()), cam, shape)
    return np.full(shape, 255, np.uint8)


def _fur(covers: dict[str, np.ndarray], rng: np.random.Generator, g: Garment, k: float) -> None:
    """Fuzzy edges: short strands leaving the outline; the retoucher keeps them in the cutout."""
    for name in ("garment", "sleeves"):
        if name not in covers:
            continue
        coverage = covers[name]
        contours, _ = cv2.findContours(
            (coverage >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        length = g.fur_len * REF_HEIGHT * k
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
                cv2.line(coverage, tuple(int(v) for v in p), tuple(int(v) for v in end), 255, 1, cv2.LINE_AA)


def _shadow(img: np.ndarray, covers: dict[str, np.ndarray], rng: np.random.Generator, k: float) -> None:
    """Soft shadow of everything on the sweep and the turntable."""
    h, w = img.shape[:2]
    union = np.maximum.reduce(list(covers.values()))
    small = cv2.resize(union, (w // 8, h // 8), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    m = np.float32([[1, 0, rng.uniform(-4, 10) * k * 2], [0, 1, rng.uniform(2, 8) * k * 2]])
    small = cv2.warpAffine(small, m, (w // 8, h // 8))
    small = cv2.GaussianBlur(small, (0, 0), 6 * k + 1)
    shadow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img *= (1 - float(rng.uniform(0.12, 0.28)) * shadow)[..., None]


def _shade(
    covers: dict[str, np.ndarray], layers: list[_Layer], mannequin: bool, sigma_px: float
) -> np.ndarray:
    """Shading of the mannequin's (or the garment's) layers as one round form."""
    union = np.maximum.reduce([covers[n] for n, _, v in layers if (v == _MANNEQUIN) == mannequin])
    return np.sqrt(np.clip(roundness(union, sigma_px), 0, 1))


def _opacity(g: Garment, name: str) -> float:
    """Sheer sleeves, or a sheer skirt, let what is behind them show through."""
    if g.fabric != "sheer":
        return 1.0
    if g.sheer_part == "sleeves" and name in ("sleeves", "far_sleeve"):
        return 0.62
    if g.sheer_part == "skirt" and name in ("garment", "back_layer") and g.kind in ("skirt", "dress"):
        return 0.62
    return 1.0


def _paint_layers(
    img: np.ndarray, scene: Scene, layers: list[_Layer], covers: dict[str, np.ndarray], view: str, cam: Camera
) -> np.ndarray:
    """Composite the layers bottom to top (mannequin finish or fabric, shaded); return the label map."""
    g, shape, k = scene.garment, scene.shape, scene.k
    label = np.zeros(shape, np.uint8)
    finish = np.array(scene.body.finish, np.float32)
    man_shade = 0.62 + 0.45 * _shade(covers, layers, True, 18 * k)
    fabric = warp(scene.fabric, cam, k, shape)
    garm_shade = 0.7 + 0.34 * _shade(covers, layers, False, 30 * k)
    for name, _, value in layers:
        colour, shade = (finish, man_shade) if value == _MANNEQUIN else (fabric, garm_shade)
        if name == "back_layer":
            shade = garm_shade * 0.8  # the inside of the back layer sits in shade
        paint(img, label, covers[name], colour, value, _opacity(g, name), shade)
        if name != "garment":
            continue
        if g.fabric == "sheer" and g.sheer_part == "yoke":
            yoke = np.minimum(covers[name], band(0.0, 0.25, cam, shape))
            paint(img, label, yoke, finish, _GARMENT, 0.6, man_shade)
        if g.buttons and view != "Back" and g.kind not in ("skirt", "trousers"):
            _buttons(img, g, cam, k)
    return label


def _buttons(img: np.ndarray, g: Garment, cam: Camera, k: float) -> None:
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


def _expose(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light fall-off, vignette and the key light's side, then sensor noise: the shot (uint8 RGB)."""
    h, w = img.shape[:2]
    sh, sw = h // 8, w // 8
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    side = float(rng.uniform(-0.08, 0.08))
    light = (
        1.0 + side * (xx / sw - 0.5) - 0.16 * (((xx / sw - 0.5) * 1.2) ** 2 + ((yy / sh - 0.42) * 0.9) ** 2)
    )
    img *= cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    sigma = 0.45 + 1.1 * (1 - cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) / 255)
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _truth(label: np.ndarray, g: Garment, view: str, cam: Camera, k: float) -> np.ndarray:
    """The retoucher's cutout alpha (uint8 0/255): garment and back layer, with a noisy truth's mistake."""
    truth = label >= _GARMENT
    if g.noisy == "back_layer" and view != "Back":
        truth = label == _GARMENT  # the back layer left out
    elif g.noisy == "thin_arms":
        truth = _thin_under_arms(truth, cam, k)
    return truth.astype(np.uint8) * 255


def _thin_under_arms(truth: np.ndarray, cam: Camera, k: float) -> np.ndarray:
    """A retoucher's cutout a few pixels too thin under the arms."""
    arms = cover([np.array([(-0.25, 0.2), (0.25, 0.2), (0.25, 0.42), (-0.25, 0.42)])], cam, truth.shape)
    size = max(3, round(9 * k)) | 1
    eroded = cv2.erode(truth.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    return np.where(arms.astype(bool), eroded, truth)

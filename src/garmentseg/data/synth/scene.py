"""The studio around the mannequin: one scene per garment (shared by its three views), and per view the
camera, the paper backdrop, stands, wires and the turntable."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from garmentseg.data.synth.garment import Body, Garment, GarmentSpec, draw_body, draw_garment, garment_rng
from garmentseg.data.synth.raster import REF_HEIGHT, Camera, smooth_field
from garmentseg.data.synth.shapes import ellipse
from garmentseg.data.synth.textures import texture


@dataclass(frozen=True)
class Scene:
    """What every view of one garment shares: mannequin, garment, fabric canvases, studio and frame size."""

    body: Body
    garment: Garment
    fabric: np.ndarray  # float RGB texture canvas (textures.texture)
    lace_holes: np.ndarray  # uint8 0/255 on the same canvas
    studio_seed: int  # the backdrop, stands and wires draw from it, the same in every view
    floor_frac: float
    turntable_tone: float
    shape: tuple[int, int]  # (height, width)

    @property
    def k(self) -> float:
        """Frame height over the reference height: pixel sizes scale with it."""
        return self.shape[0] / REF_HEIGHT


def draw_scene(spec: GarmentSpec, width: int, height: int, *, exact_truth: bool = False) -> Scene:
    """Everything a garment's own RNG draws, in its fixed order (the seed's bytes depend on it)."""
    rng = garment_rng(spec.seed, spec.index + 1)
    rng.bytes(16)  # the garment id (plan_garments)
    body = draw_body(rng)
    studio_seed = int(rng.integers(2**31))
    floor_frac = float(rng.uniform(0.8, 0.9))
    _, backdrop_colour = _backdrop(np.random.default_rng(studio_seed), (16, 16), 12)
    g = draw_garment(spec, rng, body, backdrop_colour)
    if exact_truth:
        g = replace(g, noisy="")
    fabric, lace_holes = texture(g, rng, height / REF_HEIGHT)
    turntable_tone = float(rng.choice([235.0, 150.0, 45.0]))
    return Scene(body, g, fabric, lace_holes, studio_seed, floor_frac, turntable_tone, (height, width))


def camera(rng: np.random.Generator, kind: str, view: str, width: int, height: int) -> Camera:
    """Framing for the garment's kind (short garments closer), a little jitter, the view's turn."""
    if kind in ("top", "jacket", "skirt"):
        y_top, y_bottom = -0.03, 0.83
    else:
        y_top, y_bottom = -0.05, 1.1
    u = height / (y_bottom - y_top) * float(rng.uniform(0.97, 1.02))
    ox = width / 2 + float(rng.normal(0, 0.01)) * u
    oy = -y_top * u + float(rng.normal(0, 0.006)) * u
    squeeze = {"Front": 1.0, "FrontRight": 0.8, "Back": -1.0}[view]
    return Camera(ox, oy, squeeze * u, u)


def studio_plate(scene: Scene, cam: Camera) -> np.ndarray:
    """The empty set for a view (float RGB): backdrop with floor, stands and wires, the turntable."""
    h, _ = scene.shape
    feet_y = cam.oy + cam.u * 1.0
    floor_y = min(feet_y - 0.03 * cam.u, scene.floor_frac * h) if feet_y < h else scene.floor_frac * h
    studio = np.random.default_rng(scene.studio_seed)  # same studio (backdrop, stands) for the three views
    img, _ = _backdrop(studio, scene.shape, floor_y)
    _stands_and_wires(img, studio, cam, floor_y)
    _turntable(img, scene.turntable_tone, cam)
    return img


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
    shade += 0.015 * (smooth_field(rng, (sh, sw), 6, 1.5) - 0.5)
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


def _stands_and_wires(img: np.ndarray, rng: np.random.Generator, cam: Camera, floor_y: float) -> None:
    h, w = img.shape[:2]
    k = h / REF_HEIGHT
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


def _turntable(img: np.ndarray, tone: float, cam: Camera) -> None:
    top = ellipse(0.0, 1.0, 0.27, 0.042, 72)
    bottom = top + np.array([0.0, 0.025])
    band = np.array([(-0.27, 1.0), (0.27, 1.0), (0.27, 1.025), (-0.27, 1.025)])
    h = img.shape[0]
    for poly, shade in ((bottom, 0.5), (band, 0.5), (top, 1.0)):
        pts = np.round(cam.px(poly) * 16).astype(np.int32)
        cv2.fillPoly(img, [pts], (tone * shade,) * 3, lineType=cv2.LINE_AA, shift=4)
    rim = np.round(cam.px(top) * 16).astype(np.int32)
    cv2.polylines(img, [rim], True, (tone * 0.8,) * 3, max(1, int(3 * h / REF_HEIGHT)), cv2.LINE_AA, shift=4)

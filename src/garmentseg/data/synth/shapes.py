"""Outlines in body units: the mannequin's parts, the garment's silhouette per view, sleeves and holes.

y runs from the top of the head (0) to the soles (1), x from the centre line; half-outlines are drawn on
the left (x <= 0) and mirrored. Everything here is polygons (N x 2 float arrays); nothing is drawn.
"""

from __future__ import annotations

import math

import numpy as np

from garmentseg.data.synth.garment import Body, Garment


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
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


# -------------------------------------------------------------------------------------------- the garment


def _hem_line(x0: float, x1: float, y: float, g: Garment) -> list[tuple[float, float]]:
    """A hem from x0 to x1 that dips towards the centre (perspective) and waves with the folds."""
    xs = np.linspace(x0, x1, 8)
    half = max(abs(x0), abs(x1), 1e-6)
    ys = y + 0.012 * (1 - (xs / half) ** 2) + 0.004 * g.fold_amp * 5 * np.sin(xs * g.fold_freq)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def _upper_half(body: Body, g: Garment, hem: float, view: str) -> list[tuple[float, float]]:
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
    pts += _hem_line(-hem_hw, 0.0, hem, g)
    return pts


def _skirt_half(body: Body, g: Garment, hem: float) -> list[tuple[float, float]]:
    e = g.ease
    hem_hw = body.hip + e + g.flare * (hem - 0.47) / 0.4
    pts = [(0.0, g.waist_y - 0.01), (-(body.waist + e + 0.004), g.waist_y - 0.012), (-(body.hip + e), 0.47)]
    return pts + _hem_line(-hem_hw, 0.0, hem, g)


def _trousers(body: Body, g: Garment) -> np.ndarray:
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


def silhouette(body: Body, g: Garment, view: str) -> list[np.ndarray]:
    """The garment's main outline in a view (the Back view shows the back hem)."""
    hem = g.hem_back if view == "Back" else g.hem
    if g.kind == "trousers":
        return [_trousers(body, g)]
    if g.kind == "skirt":
        return [_mirror(_skirt_half(body, g, hem))]
    main = [_mirror(_upper_half(body, g, hem, view))]
    if g.kind == "dress" and hem > 0.5:
        main.append(_mirror(_skirt_half(body, g, hem)))
    return main


def back_layer(body: Body, g: Garment, view: str) -> np.ndarray | None:
    """A dip hem's back layer, seen below the front hem and a little wider (None: not in this view)."""
    if g.hem_back <= g.hem or view == "Back":
        return None
    if g.kind == "skirt":
        layer = _mirror(_skirt_half(body, g, g.hem_back))
    else:
        layer = _mirror(_upper_half(body, g, g.hem_back, view))
    layer[:, 0] *= 1.04
    if view == "FrontRight":
        layer[:, 0] += 0.02
    return layer


def _legs_open_between(g: Garment) -> np.ndarray:
    """The gap between trouser legs (the mannequin and the stand show through)."""
    in_hem = max(0.045 - g.leg_hw, 0.004)
    return np.array([(0.0, 0.55), (-in_hem * 0.4, g.hem + 0.01), (in_hem * 0.4, g.hem + 0.01)])


def _neckline(g: Garment) -> np.ndarray:
    d, w = g.neck_depth, g.neck_hw
    if g.neck_shape == "v":
        return np.array([(-w, 0.1), (w, 0.1), (w, 0.15), (0.0, 0.15 + d), (-w, 0.15)])
    if g.neck_shape == "boat":
        return ellipse(0.0, 0.15, w + 0.02, 0.012 + d * 0.2)
    return ellipse(0.0, 0.15, w, 0.01 + d * 0.6)


def _opening(g: Garment) -> np.ndarray:
    """Jacket/coat front: lapels open from the neck to the top button."""
    return np.array(
        [(-g.neck_hw - 0.004, 0.12), (g.neck_hw + 0.004, 0.12), (0.004, g.opening), (-0.004, g.opening)]
    )


def holes(g: Garment, view: str) -> list[np.ndarray]:
    """Where the garment shows what is behind it: between trouser legs, the neckline, an open front."""
    found = [_legs_open_between(g)] if g.kind == "trousers" else []
    if view != "Back":
        if g.kind in ("jacket", "coat"):
            found.append(_opening(g))
        elif g.kind in ("dress", "top"):
            found.append(_neckline(g))
    if view == "FrontRight":  # the centre front turns towards the far side
        found = [p + np.array([0.025, 0.0]) for p in found]
    return found


def sleeves(body: Body, g: Garment) -> dict[int, np.ndarray]:
    """Sleeve outlines by side (-1 left, 1 right) along the arms; none for a sleeveless garment."""
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


# ------------------------------------------------------------------------------------------ the mannequin


def stand() -> np.ndarray:
    """The mannequin's pole, from the turntable up to the hips."""
    return _ribbon([(0.0, 1.0), (0.0, 0.6)], [0.014, 0.012])


def _mannequin_parts(body: Body) -> dict[str, np.ndarray]:
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
    head = ellipse(0.0, 0.066, 0.046, 0.066)
    parts = {"torso": torso, "leg_l": legs[0], "leg_r": legs[1], "neck": neck, "head": head}
    if body.arms:
        for side, name in ((-1, "arm_l"), (1, "arm_r")):
            line = body.arm_line(side)
            arm = _ribbon(line, [0.05, 0.036, 0.03])
            hand = ellipse(line[2][0] + side * 0.002, 0.54, 0.018, 0.042, 24)
            parts[name] = np.concatenate([arm, [(line[0][0] - side * 0.01, 0.175)]])
            parts[name.replace("arm", "hand")] = hand
    return parts


def mannequin_parts(body: Body, view: str) -> dict[str, np.ndarray]:
    """Torso, legs, neck, head (and arms with hands); in FrontRight the far arm (x > 0) swings behind
    the body and the near one in a little."""
    parts = _mannequin_parts(body)
    if view != "FrontRight":
        return parts
    for name, dx in (("arm_r", -0.05), ("hand_r", -0.05), ("arm_l", 0.015), ("hand_l", 0.015)):
        if name in parts:
            parts[name] = parts[name] + [dx, 0.0]
    return parts

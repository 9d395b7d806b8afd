"""What a garment is: the parent's plan (id, type, hard cases) and what its own RNG draws (body, garment).

Every garment draws from its own RNG seeded by (seed, garment index), and the parent decides ids, types and
hard cases, so a seed gives the same bytes whatever the number of workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import cv2
import numpy as np

from garmentseg.config import HardCaseConfig

GARMENT_TYPES = ("dress", "skirt", "top", "trousers", "jacket", "coat")
HARD_CASES = ("low_contrast", "complex_pattern", "dip_hem", "noisy_truth")
_DIP_TYPES = ("dress", "skirt", "top", "coat")
_FABRICS = ("solid", "stripes", "checks", "print", "lace", "sheer", "fur")
_FABRIC_WEIGHTS = (0.3, 0.15, 0.13, 0.15, 0.1, 0.08, 0.09)
_COMPLEX = ("floral", "leopard", "camouflage", "geometric")


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


def garment_rng(seed: int, index: int) -> np.random.Generator:
    """The RNG of garment `index - 1` (index 0 is never a garment's)."""
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
        rng = garment_rng(seed, i + 1)
        garment_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        choices = _DIP_TYPES if "dip_hem" in tags[i] else GARMENT_TYPES
        garment_type = choices[int(cycle[i]) % len(choices)]
        specs.append(GarmentSpec(i, seed, garment_id, garment_type, tuple(tags[i])))
    return specs


@dataclass(frozen=True)
class Body:
    """The mannequin, in body units: y from the top of the head (0) to the soles (1), x from the centre."""

    shoulder: float
    bust: float
    waist: float
    hip: float
    arms: bool
    finish: tuple[float, float, float]

    def arm_line(self, side: int) -> list[tuple[float, float]]:
        s = self.shoulder
        return [(side * (s - 0.012), 0.19), (side * (s + 0.012), 0.35), (side * (s + 0.026), 0.5)]


@dataclass(frozen=True)
class Garment:
    """Shape, fabric and hard cases of one garment, in body units."""

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


def draw_body(rng: np.random.Generator) -> Body:
    finish = [
        (226, 193, 163),
        (236, 234, 230),
        (42, 40, 42),
    ][int(rng.choice(3, p=[0.45, 0.35, 0.2]))]
    jitter = rng.normal(0, 5, 3)
    return Body(
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


def _fabric(rng: np.random.Generator, tags: tuple[str, ...]) -> tuple[str, str]:
    """(fabric, pattern): complex patterns are prints; a low-contrast garment is never a print or checks."""
    fabric = str(rng.choice(_FABRICS, p=_FABRIC_WEIGHTS))
    if "complex_pattern" in tags:
        return "print", str(rng.choice(_COMPLEX))
    if "low_contrast" in tags and fabric in ("print", "checks"):
        return "solid", ""
    return fabric, ""


def _colours(
    rng: np.random.Generator, base: np.ndarray, pattern: str, finish: np.ndarray, backdrop: np.ndarray
) -> list[np.ndarray]:
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
    return colours


def draw_garment(spec: GarmentSpec, rng: np.random.Generator, body: Body, backdrop: np.ndarray) -> Garment:
    kind, tags = spec.garment_type, spec.tags
    finish = np.array(body.finish, np.float32)
    if "low_contrast" in tags:
        target = finish if rng.random() < 0.5 else backdrop
        base = _colour_near(rng, target, float(rng.uniform(24, 40)))
    else:
        base = _colour_far_from(rng, [finish, backdrop], 75.0)
    fabric, pattern = _fabric(rng, tags)
    colours = _colours(rng, base, pattern, finish, backdrop)
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
    return Garment(
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

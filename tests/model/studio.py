"""A tiny OpenCV-drawn studio for tests: a mannequin wearing a coloured garment on a noisy backdrop, written
in the data contract (raw/, cutouts/) with its index DataFrame; no dependency on the synthetic studio."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from garmentseg.imageio import write_png

VIEWS = ("Front", "FrontRight", "Back")


def _garment_colour(rng: np.random.Generator, avoid: tuple) -> np.ndarray:
    """A colour clearly apart from skin and backdrop (low contrast is a hard case, not a fixture's job)."""
    while True:
        colour = rng.integers(0, 256, 3)
        if all(np.linalg.norm(colour - np.asarray(a)) > 90 for a in avoid):
            return colour


def draw_shot(
    rng: np.random.Generator, height: int, width: int, *, garment: bool = True, backdrop: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB shot, bool garment mask): backdrop noise, a skin-tone mannequin, a garment polygon over it."""
    shot = np.full((height, width, 3), backdrop, np.float32)
    shot += np.linspace(-12, 12, height, dtype=np.float32)[:, None, None]
    shot += rng.normal(0, 4, shot.shape).astype(np.float32)
    cx = width // 2 + int(rng.integers(-width // 12, width // 12 + 1))
    skin = (205, 170, 140)
    cv2.ellipse(shot, (cx, height // 8), (width // 10, height // 14), 0, 0, 360, skin, -1)
    cv2.rectangle(shot, (cx - width // 6, height // 5), (cx + width // 6, int(height * 0.95)), skin, -1)
    mask = np.zeros((height, width), np.uint8)
    if garment:
        top_share = rng.uniform(0.15, 0.55)  # tops, skirts and dresses: the body shows above and below
        top = int(height * top_share)
        bottom = int(height * min(0.95, top_share + rng.uniform(0.2, 0.45)))
        half_top = int(width * rng.uniform(0.1, 0.22))
        half_bottom = int(width * rng.uniform(0.18, 0.4))
        poly = np.array(
            [
                [cx - half_top, top],
                [cx + half_top, top],
                [cx + half_bottom, bottom],
                [cx - half_bottom, bottom],
            ],
            np.int32,
        )
        cv2.fillPoly(mask, [poly], 1)
        colour = _garment_colour(rng, (skin, (backdrop,) * 3))
        layer = np.zeros_like(shot)
        layer[:] = colour
        if rng.random() < 0.4:  # stripes: the seed's "complex pattern"
            layer[:: max(2, height // 24)] *= 0.5
        shot = np.where(mask[..., None] > 0, layer + rng.normal(0, 3, shot.shape), shot)
    return np.clip(shot, 0, 255).astype(np.uint8), mask > 0


def make_studio(root: Path, garments: int, height: int = 144, width: int = 96, seed: int = 0) -> pd.DataFrame:
    """Write `garments` x 3 views in the contract under root; return the index (split by garment)."""
    rng = np.random.default_rng(seed)
    rows = []
    splits = ["train"] * garments
    n_valid = n_test = max(1, garments // 6)
    splits[-(n_valid + n_test) : -n_test] = ["valid"] * n_valid
    splits[-n_test:] = ["test"] * n_test
    for g in range(garments):
        gid = str(uuid.UUID(int=int(rng.integers(0, 2**62)) + g))
        for view in VIEWS:
            shot, mask = draw_shot(rng, height, width)
            cutout = np.dstack([shot, mask.astype(np.uint8) * 255])
            name = f"{gid}_{view}.png"
            write_png(root / "raw" / name, shot)
            write_png(root / "cutouts" / name, cutout)
            rows.append(
                {
                    "garment_id": gid,
                    "view": view,
                    "raw_path": f"raw/{name}",
                    "cutout_path": f"cutouts/{name}",
                    "raw_sha256": f"{g}-{view}-raw",
                    "cutout_sha256": f"{g}-{view}-cut",
                    "width": width,
                    "height": height,
                    "split": splits[g],
                    "garment_type": "dress",
                    "difficulty": "complex_pattern" if g % 3 == 0 else "normal",
                    "batch_id": "fixture",
                }
            )
    return pd.DataFrame(rows)


def tiny_overrides(tmp: Path, *, height: int = 48, width: int = 32, epochs: int = 12) -> dict:
    """Config overrides that keep everything (cache, MLflow) in tmp and the model CPU-test sized."""
    return {
        "paths": {"state_dir": str(tmp / "var")},
        "model": {
            "arch": "carvana",
            "base_filters": 8,
            "depth": 3,
            "input_height": height,
            "input_width": width,
        },
        "training": {"epochs": epochs, "batch_size": 8, "early_stopping": {"patience": 50}},
        "registry": {
            "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
            "artifact_root": str(tmp / "artifacts"),
        },
        "evaluation": {"gallery_size": 2},
        "review": {"database": f"sqlite:///{tmp}/review.db", "storage_dir": str(tmp / "review")},
    }

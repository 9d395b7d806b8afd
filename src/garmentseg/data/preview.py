"""A contact sheet: shots beside their cutouts, to look at what a dataset or batch contains."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from garmentseg.data.contract import GARMENTS_CSV, discover_pairs, read_garments_csv
from garmentseg.imageio import read_image, write_png

TILE_HEIGHT = 200


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 200, 235).astype(np.uint8).repeat(3, 2)


def contact_sheet(
    batch_dir: Path, out_png: Path, n: int = 12, max_pixels: int = 40_000_000, columns: int = 4
) -> Path:
    """Write n shots (spread over the batch's garments and views), each beside its cutout on a checkerboard."""
    pairs, _ = discover_pairs(Path(batch_dir))
    pairs = [p for p in pairs if p.raw and p.cutout]
    if not pairs:
        raise ValueError(f"{batch_dir}: no complete raw/cutout pairs to show")
    tags: dict[str, str] = {}
    meta = Path(batch_dir) / GARMENTS_CSV
    if meta.exists():
        tags = {
            garment: f"{kind} {difficulty}" for garment, (kind, difficulty) in read_garments_csv(meta).items()
        }
    by_garment: dict[str, list] = {}
    for pair in pairs:
        by_garment.setdefault(pair.key.garment_id, []).append(pair)
    garments = list(by_garment.values())
    # One shot per garment while garments last, rotating the view, so the sheet shows variety.
    chosen = [
        garments[i % len(garments)][(i + i // len(garments)) % len(garments[i % len(garments)])]
        for i in range(min(n, len(pairs)))
    ]
    tiles = []
    for pair in chosen:
        shot = read_image(Path(batch_dir) / pair.raw, max_pixels=max_pixels)
        cut = read_image(Path(batch_dir) / pair.cutout, max_pixels=max_pixels, alpha=True)
        h, w = shot.shape[:2]
        tw = round(w * TILE_HEIGHT / h)
        small = cv2.resize(shot, (tw, TILE_HEIGHT), interpolation=cv2.INTER_AREA)
        rgba = cv2.resize(cut, (tw, TILE_HEIGHT), interpolation=cv2.INTER_AREA).astype(np.float32)
        a = rgba[..., 3:] / 255
        comp = (rgba[..., :3] * a + _checker(TILE_HEIGHT, tw) * (1 - a)).astype(np.uint8)
        tile = np.concatenate([small, comp], axis=1)
        label = f"{pair.key.view} {tags.get(pair.key.garment_id, '')}"[:48]
        band = np.full((16, tile.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([band, tile], axis=0))
    th, tw = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (th + 4), columns * (tw + 4), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (th + 4) : r * (th + 4) + th, c * (tw + 4) : c * (tw + 4) + tile.shape[1]] = tile
    # Dropping the three low bits (sensor noise) keeps the sheet small enough to commit, with no visible loss.
    write_png(Path(out_png), sheet & 0xF8)
    return Path(out_png)

"""Cut out a folder of shots with a model, exactly as the service would: RGBA cutouts, masks and each shot's
needs-manual-cutout score; `garmentseg predict` at the bottom."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from garmentseg.cliopts import config_options
from garmentseg.config import load_config
from garmentseg.imageio import ImageError, read_image, write_png
from garmentseg.inference import CutoutModel, in_precision, load_cutout_model, to_cutout, to_mask

if TYPE_CHECKING:
    from garmentseg.config import Config

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
SCORES_FILE = "scores.csv"


@dataclass
class FolderResult:
    """How many cutouts were written, and (file name, reason) for every shot that could not be read."""

    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def list_shots(in_dir: Path) -> list[Path]:
    """The PNG and JPEG files directly inside `in_dir`, by name."""
    return sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_model(model_uri: str, cfg: Config) -> CutoutModel:
    """The model in the service's precision, so a folder cut out here matches the endpoint pixel for pixel."""
    return in_precision(load_cutout_model(model_uri, cfg.tracking_uri), cfg.serving.precision)


def cut_out(model: CutoutModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """(RGBA cutout, uint8 mask, manual-cutout score, flagged) for one RGB shot at its own resolution."""
    prob = model.predict_proba([image])[0]
    mask = to_mask(prob, model.threshold)
    score, flagged = model.needs_manual_cutout(prob)
    return to_cutout(image, mask), mask, score, flagged


def cut_out_folder(model: CutoutModel, shots: Iterable[Path], out_dir: Path, max_pixels: int) -> FolderResult:
    """out_dir/cutouts/<stem>.png (RGBA), out_dir/masks/<stem>.png and out_dir/scores.csv for every shot;
    a shot that cannot be read is skipped and named, the others still cut out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = FolderResult()
    with (out_dir / SCORES_FILE).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "manual_cutout_score", "needs_manual_cutout"])
        for path in shots:
            try:
                image = read_image(path, max_pixels=max_pixels)
            except (ImageError, OSError) as exc:
                result.skipped.append((path.name, str(exc)))
                continue
            cutout, mask, score, flagged = cut_out(model, image)
            write_png(out_dir / "cutouts" / f"{path.stem}.png", cutout)
            write_png(out_dir / "masks" / f"{path.stem}.png", mask)
            writer.writerow([path.name, f"{score:.4f}", flagged])
            result.written += 1
    return result


@click.command("predict")
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/name/version or a folder."
)
@config_options
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def predict_cmd(model_uri: str, profile: str | None, params: str | None, in_dir: Path, out_dir: Path) -> None:
    """Cut out every shot in IN_DIR: OUT_DIR/cutouts/*.png (RGBA), OUT_DIR/masks/*.png, OUT_DIR/scores.csv."""
    from tqdm import tqdm

    cfg = load_config(profile, params)
    model = load_model(model_uri, cfg)
    shots = tqdm(list_shots(in_dir), desc="predict", unit="img", disable=None)
    result = cut_out_folder(model, shots, out_dir, cfg.serving.max_pixels)
    click.echo(f"{result.written} cutouts written to {out_dir}")
    for name, reason in result.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    if result.skipped:
        raise SystemExit(1)

"""Cut out a folder of shots with a model, exactly as the service would: RGBA cutouts, masks, each shot's
needs-manual-cutout score and Dice estimate, and the doubtful ones queued for review (review/store.py);
`garmentseg predict` at the bottom."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from garmentseg.cliopts import config_options
from garmentseg.config import load_config
from garmentseg.data.contract import (
    SHOT_SUFFIXES,
    ContractError,
    is_text_name,
    os_junk,
    parse_shot_file,
    printable_name,
)
from garmentseg.imageio import ImageError, read_image, too_small, write_png
from garmentseg.inference import (
    CutoutModel,
    cutout_alpha,
    in_precision,
    load_cutout_model,
    to_cutout,
    to_mask,
)

if TYPE_CHECKING:
    from garmentseg.config import Config
    from garmentseg.review.store import ReviewItem, ReviewQueue

SCORES_FILE = "scores.csv"
SCORE_COLUMNS = (
    "file",
    "manual_cutout_score",
    "needs_manual_cutout",
    "dice_estimate",
    "needs_review",
    "model",
)


class ScoresFileError(ValueError):
    """OUT_DIR holds a scores.csv nobody but predict should write: refused, not overwritten."""


@dataclass
class FolderResult:
    """How many cutouts were written and queued, (file name, reason) for every shot that could not be read,
    and for every doubtful one that could not be queued."""

    written: int = 0
    queued: int = 0  # doubtful, and open in the queue (pending or sent to retouch)
    decided_before: int = 0  # doubtful, but the same shot's item was decided or closed before
    skipped: list[tuple[str, str]] = field(default_factory=list)
    not_queued: list[tuple[str, str]] = field(default_factory=list)


def list_shots(in_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """(the PNG and JPEG files directly inside `in_dir`, by name; (name, why) for every other entry that is
    no OS junk or dot-file, and for a shot whose name differs from another's only by its suffix: its
    cutout would be written over the other's)."""
    shots: dict[str, Path] = {}
    ignored = []
    for path in sorted(in_dir.iterdir()):
        if os_junk(path.name) or path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() not in SHOT_SUFFIXES:
            what = "a folder: shots sit directly in it" if path.is_dir() else "not a PNG or JPEG shot"
            ignored.append((printable_name(path.name), what))
        elif path.stem in shots:
            ignored.append(
                (path.name, f"same name as {shots[path.stem].name}; its cutout would replace that one's")
            )
        else:
            shots[path.stem] = path
    return sorted(shots.values()), ignored


def load_model(model_uri: str, cfg: Config) -> CutoutModel:
    """The model in the service's precision, so a folder cut out here matches the endpoint pixel for pixel."""
    from mlflow.exceptions import MlflowException

    try:
        model = load_cutout_model(model_uri, cfg.tracking_uri)
    except (MlflowException, OSError) as exc:
        raise click.ClickException(f"model {model_uri}: cannot be loaded: {exc}") from None
    return in_precision(model, cfg.serving.precision)


@dataclass(frozen=True)
class Cutout:
    """One shot cut out: the RGBA cutout (its alpha as serving.alpha says), its binary mask, and what the
    model thinks of it."""

    rgba: np.ndarray
    mask: np.ndarray
    score: float  # needs-manual-cutout score
    flagged: bool
    estimate: float  # Dice estimate (NaN for a model logged without one)
    needs_review: bool


def model_label(model: CutoutModel) -> str:
    """How scores.csv and the review queue name the model that made a cutout."""
    return model.model_version or model.model_uri or "unregistered"


def cut_out(model: CutoutModel, image: np.ndarray, alpha: str = "binary") -> Cutout:
    """One RGB shot at its own resolution, through one inference; `alpha`: serving.alpha."""
    maps = model.predict_maps([image])[0]
    mask = to_mask(maps.prob, model.threshold)
    score, flagged = model.needs_manual_cutout(maps.prob)
    estimate, needs_review = model.review(maps)
    rgba = to_cutout(image, cutout_alpha(maps.prob, model.threshold, alpha, mask))
    return Cutout(rgba, mask, score, flagged, estimate, needs_review)


def queue_cutout(
    queue: ReviewQueue, model: CutoutModel, shot: Path, cutout_png: Path, made: Cutout, source: str
) -> tuple[ReviewItem | None, str | None]:
    """Log the cutout with its estimate and queue it when doubtful: (the shot's queue item, None), where the
    item may be one decided or closed before (the same shot cut out again); for a doubtful cutout that could
    not be queued, (None, why). A cutout that needs no review and cannot be logged is let go silently."""
    if math.isnan(made.estimate):
        reason = "the model carries no Dice estimate (logged before the review loop): retrain it to queue"
        return None, reason if made.needs_review else None
    try:
        key = parse_shot_file(shot.name)
    except ContractError as exc:
        return None, str(exc) if made.needs_review else None
    height, width = made.rgba.shape[:2]
    if problem := queue.shot_problem(key.stem, width, height):
        return None, problem if made.needs_review else None
    item = queue.record_cutout(
        file=key.stem,
        shot=shot,
        cutout=cutout_png,
        estimate=made.estimate,
        needs_review=made.needs_review,
        model_version=model_label(model),
        source=source,
    )
    return item, None


def cut_out_folder(
    model: CutoutModel,
    shots: Iterable[Path],
    out_dir: Path,
    max_pixels: int,
    queue: ReviewQueue | None = None,
    alpha: str = "binary",
    ignored: Iterable[tuple[str, str]] = (),
) -> FolderResult:
    """out_dir/cutouts/<stem>.png (RGBA, alpha as `alpha` says), out_dir/masks/<stem>.png (0/255) and
    out_dir/scores.csv for every shot, and the doubtful ones into `queue` when given; a shot that cannot be
    read, or whose name is not text, is skipped and named, the others still cut out. `ignored`: what the
    listing left out (`list_shots`), named first among the skipped."""
    from garmentseg.review.store import OPEN_STATES

    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_scores(out_dir / SCORES_FILE)
    result, scores = FolderResult(skipped=list(ignored)), []
    for path in shots:
        if not is_text_name(path.name):  # no text can name its outputs or its queue item
            result.skipped.append((printable_name(path.name), "file name is not UTF-8 text; rename it"))
            continue
        try:
            image = read_image(path, max_pixels=max_pixels)
        except (ImageError, OSError) as exc:
            result.skipped.append((path.name, str(exc)))
            continue
        if problem := too_small(image):
            result.skipped.append((path.name, problem))
            continue
        made = cut_out(model, image, alpha)
        cutout_png = out_dir / "cutouts" / f"{path.stem}.png"
        write_png(cutout_png, made.rgba)
        write_png(out_dir / "masks" / f"{path.stem}.png", made.mask)
        scores.append(
            {
                "file": path.name,
                "manual_cutout_score": f"{made.score:.4f}",
                "needs_manual_cutout": made.flagged,
                "dice_estimate": f"{made.estimate:.4f}",
                "needs_review": made.needs_review,
                "model": model_label(model),
            }
        )
        result.written += 1
        if queue is not None:
            item, reason = queue_cutout(queue, model, path, cutout_png, made, "predict")
            if reason:
                result.not_queued.append((path.name, reason))
            elif item is not None and item.state in OPEN_STATES:
                result.queued += 1
            elif item is not None:
                result.decided_before += 1
    _write_scores(out_dir / SCORES_FILE, earlier, scores)
    return result


def _earlier_scores(scores_file: Path) -> list[dict[str, str]]:
    """The rows an earlier run into the same folder wrote, so its cutouts keep their scores; a file there
    that is no scores file (other columns, not UTF-8 text, a folder) is refused before anything is cut
    out, never overwritten. A byte-order mark (a spreadsheet's "CSV UTF-8") is fine."""
    if not scores_file.exists():
        return []
    foreign = f"{scores_file}: not a {SCORES_FILE} `garmentseg predict` wrote"
    try:
        with scores_file.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if not columns or columns[0] != "file" or not set(columns) <= set(SCORE_COLUMNS):
                raise ScoresFileError(
                    f"{foreign} (columns {', '.join(columns) or 'none'}); move it away (nothing cut out)"
                )
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ScoresFileError(f"{foreign} ({exc}); move it away (nothing cut out)") from None


def _write_scores(scores_file: Path, earlier: list[dict[str, str]], scores: list[dict[str, object]]) -> None:
    """One row per cutout in the folder: this run's, and an earlier run's for shots not cut out again."""
    fresh = {Path(str(row["file"])).stem for row in scores}  # a.jpg cut out again as a.png: one cutout
    rows = [row for row in earlier if Path(row["file"]).stem not in fresh] + scores
    partial = scores_file.with_name(f".{scores_file.name}.tmp")
    with partial.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, SCORE_COLUMNS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(scores_file)


@click.command("predict")
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/name/version or a folder."
)
@config_options
@click.option(
    "--queue/--no-queue",
    default=True,
    show_default=True,
    help="Queue the doubtful cutouts for review (review.database).",
)
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def predict_cmd(
    model_uri: str, profile: str | None, params: str | None, queue: bool, in_dir: Path, out_dir: Path
) -> None:
    """Cut out every shot in IN_DIR: OUT_DIR/cutouts/*.png (RGBA), OUT_DIR/masks/*.png, OUT_DIR/scores.csv;
    the doubtful ones go to the review queue."""
    from tqdm import tqdm

    from garmentseg.review.store import ReviewQueue

    written_into = {out_dir.resolve() / sub for sub in ("cutouts", "masks")}
    if in_dir.resolve() in written_into:
        raise click.UsageError(
            f"{in_dir} is where the cutouts or masks go: OUT_DIR would write over the shots"
        )
    cfg = load_config(profile, params)
    model = load_model(model_uri, cfg)
    review_queue = ReviewQueue.from_config(cfg) if queue else None
    listed, ignored = list_shots(in_dir)
    shots = tqdm(listed, desc="predict", unit="img", disable=None)
    try:
        result = cut_out_folder(
            model,
            shots,
            out_dir,
            cfg.serving.max_pixels,
            review_queue,
            alpha=cfg.serving.alpha,
            ignored=ignored,
        )
    except ScoresFileError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{result.written} cutouts written to {out_dir}")
    if review_queue is not None:
        before = f"; {result.decided_before} more of shots reviewed before" if result.decided_before else ""
        click.echo(
            f"{result.queued} doubtful cutouts open in the review queue{before} ({review_queue.location})"
        )
    for name, reason in result.not_queued:
        click.echo(f"not queued {name}: {reason}", err=True)
    for name, reason in result.skipped:
        click.echo(f"skipped {name}: {reason}", err=True)
    if result.skipped or result.not_queued:  # a script must see what was not cut out, or not queued
        raise SystemExit(1)

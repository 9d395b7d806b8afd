"""`garmentseg train | evaluate | predict`: thin commands over training, evaluation and serving."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from garmentseg.cliopts import config_options
from garmentseg.config import load_config

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _echo_json(payload: dict) -> None:
    from garmentseg.evaluation import finite

    click.echo(json.dumps(finite(payload), indent=2, sort_keys=True))


@click.command()
@config_options
@click.option(
    "--dataset",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data dir or contract folder (default: the DVC dataset, paths.data_dir).",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write curves, metrics and report here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: run_id, model_uri, metrics.")
def train(
    profile: str | None, params: str | None, dataset: Path | None, out: Path | None, as_json: bool
) -> None:
    """Train the U-Net, tune it on valid, score test at full resolution, log it all to MLflow."""
    from garmentseg.training import train as run_training

    # Keras prints its epoch lines on stdout; keep stdout for the result (a URI or one JSON object)
    with contextlib.redirect_stdout(sys.stderr):
        result = run_training(load_config(profile, params), dataset, out_dir=out)
    if as_json:
        _echo_json({"run_id": result.run_id, "model_uri": result.model_uri, "metrics": result.metrics})
    else:
        click.echo(result.model_uri)


@click.command()
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/name/version or a folder."
)
@config_options
@click.option("--dataset", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--split",
    default=None,
    type=click.Choice(["train", "valid", "test", "all"]),
    help="Default: all with --dataset (a folder is scored whole), else test.",
)
@click.option("--flip-tta/--no-flip-tta", default=None, help="Override evaluation.flip_tta.")
@click.option(
    "--out", default=None, type=click.Path(file_okay=False, path_type=Path), help="Write the report here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def evaluate(
    model_uri: str,
    profile: str | None,
    params: str | None,
    dataset: Path | None,
    split: str | None,
    flip_tta: bool | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Score a logged model at full resolution on a split, with slices, flags and a gallery."""
    from garmentseg import evaluation
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import load_cutout_model

    cfg = load_config(profile, params)
    model = load_cutout_model(model_uri, cfg.tracking_uri)
    frame, root = load_dataset(cfg, dataset)
    split = split or ("all" if dataset else "test")
    report = evaluation.evaluate(model, frame, root, cfg, split=split, flip=flip_tta)
    if out:
        evaluation.write_report(report, out)
    if as_json:
        _echo_json(report.summary)
    else:
        s = report.summary
        click.echo(
            f"{split}: n={s['n']} Dice median {s['dice_median']:.4f} mean {s['dice_mean']:.4f} "
            f"p10 {s['dice_p10']:.4f} IoU median {s['iou_median']:.4f} "
            f"outlier-corrected mean {s['outlier_corrected_mean']:.4f} ({s['outlier_rule']})"
        )


@click.command()
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/name/version or a folder."
)
@config_options
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def predict(model_uri: str, profile: str | None, params: str | None, in_dir: Path, out_dir: Path) -> None:
    """Cut out every shot in IN_DIR: OUT_DIR/cutouts/*.png (RGBA), OUT_DIR/masks/*.png, OUT_DIR/scores.csv."""
    import csv

    from tqdm import tqdm

    from garmentseg.imageio import ImageError, read_image, write_png
    from garmentseg.inference import in_precision, load_cutout_model, to_cutout, to_mask

    cfg = load_config(profile, params)
    # the service's precision, so a folder cut out here matches the endpoint pixel for pixel
    model = in_precision(load_cutout_model(model_uri, cfg.tracking_uri), cfg.serving.precision)
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    with (out_dir / "scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "manual_cutout_score", "needs_manual_cutout"])
        for path in tqdm(files, desc="predict", unit="img", disable=None):
            try:
                image = read_image(path, max_pixels=cfg.serving.max_pixels)
            except (ImageError, OSError) as exc:
                failures.append((path.name, str(exc)))
                continue
            prob = model.predict_proba([image])[0]
            mask = to_mask(prob, model.threshold)
            write_png(out_dir / "cutouts" / f"{path.stem}.png", to_cutout(image, mask))
            write_png(out_dir / "masks" / f"{path.stem}.png", mask)
            score, flagged = model.needs_manual_cutout(prob)
            writer.writerow([path.name, f"{score:.4f}", flagged])
    click.echo(f"{len(files) - len(failures)} cutouts written to {out_dir}")
    for name, reason in failures:
        click.echo(f"skipped {name}: {reason}", err=True)
    if failures:
        raise SystemExit(1)

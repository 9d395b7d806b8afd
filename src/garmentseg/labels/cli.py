"""`garmentseg labels audit|confirm|release`: thin commands over the label audit and the stewards' record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from garmentseg.cliopts import config_options
from garmentseg.config import load_config

if TYPE_CHECKING:
    from garmentseg.config import Config
    from garmentseg.inference import CutoutModel


@click.group()
def labels() -> None:
    """Audit the labels (cutouts) against a model; record the stewards' decisions on suspects."""


@labels.command()
@click.argument("data", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--model-uri", default=None, help="Model to score with (default models:/<registry.model_name>@champion)."
)
@click.option(
    "--out",
    default=None,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the overlays, audit.json and index.html (default <reports_dir>/labels/<DATA folder name>).",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON ranking on stdout.")
@config_options
def audit(
    data: Path,
    model_uri: str | None,
    out: Path | None,
    as_json: bool,
    profile: str | None,
    params: str | None,
) -> None:
    """Rank every labelled pair of DATA (a batch in the data contract, or a data dir), most likely wrong first.

    Exit 0 with the ranking, 2 when DATA or the model cannot be read (no champion: the registry and alias
    are named).
    """
    from garmentseg.data.index import DatasetIndexError, load_dataset
    from garmentseg.imageio import ImageError
    from garmentseg.labels.audit import audit_labels, default_out_dir
    from garmentseg.labels.decisions import (
        apply_decisions,
        decisions_path,
        exclusion_reason,
        read_decisions,
        trained_pairs,
    )
    from garmentseg.labels.report import write_report

    cfg = load_config(profile, params)
    uri = model_uri or f"models:/{cfg.registry.model_name}@champion"
    try:
        frame, root = load_dataset(cfg, data)
    except (DatasetIndexError, ValueError, OSError) as exc:
        click.echo(f"labels audit: {data}: not a batch in the data contract nor a data dir: {exc}", err=True)
        sys.exit(2)
    not_audited = _not_audited(data)
    for line in not_audited:
        click.echo(f"labels audit: not audited: {line}", err=True)
    if frame.empty:
        click.echo(
            f"labels audit: {data}: no labelled pairs to audit (raw/<garment>_<View>.png with "
            "cutouts/<garment>_<View>.png)",
            err=True,
        )
        sys.exit(2)
    model = _load(uri, cfg, default=model_uri is None)
    out_dir = out or default_out_dir(cfg, data.resolve().name)
    # Every pair is scored: one it cannot read, or a cutout of another size than its shot, stops it by name.
    try:
        ranked = audit_labels(
            frame, root, model, cfg, out_dir=out_dir, trained_on=trained_pairs(cfg, uri, frame)
        )
    except (ImageError, ValueError) as exc:
        click.echo(
            f"labels audit: {exc}; every pair is scored, so fix or remove it (`garmentseg validate {data}` "
            "names every file it refuses)",
            err=True,
        )
        sys.exit(2)
    ranked = apply_decisions(ranked, read_decisions(decisions_path(cfg)))
    threshold = cfg.labels.exclude_score
    leaving = {s.file for s in ranked if exclusion_reason(s, s.decision, threshold) is not None}
    page = write_report(
        out_dir,
        ranked,
        model_uri=uri,
        data=data.resolve(),
        would_exclude=(threshold, leaving),
        not_audited=not_audited,
    )
    if as_json:
        rows = [{**s.public(), "excluded": s.file in leaving} for s in ranked]
        click.echo(json.dumps({"exclude_score": threshold, "suspects": rows, "not_audited": not_audited}))
        return
    for s in ranked:
        click.echo(f"{s.score:.4f}  {s.file}  {s.reason}")
    click.echo(f"overlays, audit.json and the stewards' page: {page}")


def _not_audited(data: Path) -> list[str]:
    """The files of a contract folder the audit cannot score, each with why (a shot without its cutout, a
    name outside the contract): indexing leaves them out, and a steward must not read silence as clean."""
    from garmentseg.data.contract import ContractError, discover_pairs

    try:
        pairs, problems = discover_pairs(data)
    except ContractError:  # a data dir, not a contract folder: its index holds whole pairs only
        return []
    unpaired = [
        f"{pair.raw or pair.cutout}: has no partner" for pair in pairs if not (pair.raw and pair.cutout)
    ]
    return unpaired + [f"{rel}: {reason}" for rel, reason in problems]


def _load(uri: str, cfg: Config, *, default: bool) -> CutoutModel:
    """The model, or exit 2 naming the registry and alias (or the URI) that could not be loaded."""
    from mlflow.exceptions import MlflowException

    from garmentseg.inference import load_cutout_model

    try:
        return load_cutout_model(uri, cfg.tracking_uri)
    except (MlflowException, OSError, ValueError) as exc:
        if default:
            what = (
                f"no champion: registry {cfg.tracking_uri} has no alias 'champion' on model "
                f"{cfg.registry.model_name!r} (promote one, or pass --model-uri)"
            )
        else:
            what = f"cannot load model {uri} from {cfg.tracking_uri}"
        click.echo(f"labels audit: {what}: {str(exc).splitlines()[0]}", err=True)
        sys.exit(2)


def _decide(
    decision: str, file: str, data: Path | None, note: str, profile: str | None, params: str | None
) -> None:
    from garmentseg.data.index import load_dataset
    from garmentseg.labels.decisions import (
        CONFIRMED,
        decisions_path,
        record_decision,
        recorded_decision,
        send_to_retouch,
        withdraw_retouch,
    )

    cfg = load_config(profile, params)
    frame, root = load_dataset(cfg, data)
    name = Path(file).name.removesuffix(".png")
    rows = frame[frame["garment_id"] + "_" + frame["view"] == name]
    if rows.empty:
        command = "confirm" if decision == CONFIRMED else "release"
        click.echo(f"labels {command}: {file}: no pair <garment>_<View> named {name!r} in {root}", err=True)
        sys.exit(2)
    pair, path = rows.iloc[0], decisions_path(cfg)
    was = recorded_decision(path, name, str(pair["cutout_sha256"]))
    entry = record_decision(path, name, str(pair["cutout_sha256"]), decision, note)
    if decision == CONFIRMED:
        entry |= send_to_retouch(cfg, name, root / pair["raw_path"], root / pair["cutout_path"], entry)
    elif was == CONFIRMED:  # the steward changed their mind: the retouch it queued is withdrawn
        entry |= {"withdrawn_review_items": withdraw_retouch(cfg, name, entry["by"])}
    click.echo(json.dumps(entry))


_file = click.argument("file")
_data = click.option(
    "--data",
    default=None,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Batch or data dir holding FILE (default: the configured data dir).",
)
_note = click.option("--note", default="", help="Why, for the next steward.")


@labels.command()
@_file
@_data
@_note
@config_options
def confirm(file: str, data: Path | None, note: str, profile: str | None, params: str | None) -> None:
    """FILE's label (<garment>_<View>) is wrong: keep it out of training, and queue it for retouch."""
    _decide("confirmed", file, data, note, profile, params)


@labels.command()
@_file
@_data
@_note
@config_options
def release(file: str, data: Path | None, note: str, profile: str | None, params: str | None) -> None:
    """FILE's label (<garment>_<View>) is right: never flag this exact label (same sha256) again; a retouch
    an earlier confirmation queued is withdrawn (accepted as it stands)."""
    _decide("released", file, data, note, profile, params)

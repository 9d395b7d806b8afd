"""`garmentseg validate` and `garmentseg ingest`: thin commands over validate_batch / ingest_batch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from garmentseg.cliopts import config_options
from garmentseg.config import load_config

_batch = click.argument("batch_dir", type=click.Path(path_type=Path))
_source = click.option(
    "--source", default=None, help="Entry of `sources` the batch must satisfy (default data.source)."
)


@click.command()
@_batch
@click.option(
    "--report-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Where findings.json, metadata.parquet and gallery.html go (default <reports_dir>/<batch_id>).",
)
@click.option(
    "--reference",
    default=None,
    type=click.Path(path_type=Path, exists=True),
    help="metadata.parquet of a reference batch for drift (default: latest passing batch).",
)
@_source
@config_options
def validate(
    batch_dir: Path,
    report_dir: Path | None,
    reference: Path | None,
    source: str | None,
    profile: str | None,
    params: str | None,
) -> None:
    """Validate BATCH_DIR; exit 0 pass, 1 fail, 2 not a readable batch."""
    from garmentseg.validation.validate import validate_batch

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    cfg = load_config(profile, params)
    result = validate_batch(batch_dir, cfg, report_dir=report_dir, source=source, reference=reference)
    click.echo(result.text())
    sys.exit(result.exit_code)


@click.command()
@_batch
@click.option("--batch-id", default=None, help="Batch id (default: the folder name).")
@click.option(
    "--push/--no-push",
    default=True,
    show_default=True,
    help="Publish the new data version to paths.dvc_remote.",
)
@_source
@config_options
def ingest(
    batch_dir: Path,
    batch_id: str | None,
    push: bool,
    source: str | None,
    profile: str | None,
    params: str | None,
) -> None:
    """Validate BATCH_DIR, then add it to the dataset or move it whole to quarantine.

    Exit 0 ingested (or already), 1 quarantined, 2 not a readable batch.
    """
    from garmentseg.data.plane import DatasetError
    from garmentseg.data.versioning import DvcError
    from garmentseg.validation.ingest import ingest_batch

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    cfg = load_config(profile, params)
    try:
        outcome = ingest_batch(batch_dir, cfg, source, batch_id=batch_id, push=push)
    except (DatasetError, DvcError) as exc:  # refused or rolled back: nothing half-ingested, say why
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{outcome.status}: {outcome.message}")
    if outcome.report_dir:
        click.echo(f"  report: {outcome.report_dir}")
    if outcome.data_docs_page:
        click.echo(f"  Data Docs: {outcome.data_docs_page}")
    sys.exit(outcome.exit_code)

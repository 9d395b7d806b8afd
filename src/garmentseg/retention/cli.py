"""`garmentseg gc`: the retention policy of params.yaml applied (or, with --dry-run, only listed)."""

from __future__ import annotations

import json
import sys

import click

from garmentseg.cliopts import config_options
from garmentseg.config import load_config

SHOWN_PER_KIND = 5


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would go, and why; delete nothing.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object: items, totals, protected, notes."
)
@config_options
def gc_cmd(dry_run: bool, as_json: bool, profile: str | None, params: str | None) -> None:
    """Apply `retention:` to landed folders, quarantine, reports, MLflow runs and DVC objects.

    Never removes what a registered model version names (its run, its data version). Exit 2 when the
    registry cannot be read: without the lineage nothing is collected.
    """
    from mlflow.exceptions import MlflowException

    from garmentseg.retention.plan import NoLineage, gc

    cfg = load_config(profile, params)
    try:
        summary = gc(cfg, dry_run=dry_run)
    except NoLineage as exc:
        click.echo(f"garmentseg gc: {exc}", err=True)
        sys.exit(2)
    except (MlflowException, OSError) as exc:
        click.echo(
            f"garmentseg gc: registry {cfg.tracking_uri} unreadable, nothing collected: {exc}", err=True
        )
        sys.exit(2)
    click.echo(json.dumps(summary, indent=2) if as_json else _text(summary))


def _text(summary: dict) -> str:
    items = summary["would_remove" if summary["dry_run"] else "removed"]
    verb = "would remove" if summary["dry_run"] else "removed"
    lines = [f"garmentseg gc: {verb} {len(items)} items"]
    for kind, total in summary["totals"].items():
        lines.append(f"  {kind}: {total['count']} ({total['bytes'] / 1e6:.1f} MB)")
        for item in [i for i in items if i["kind"] == kind][:SHOWN_PER_KIND]:
            lines.append(f"    {item['target']}: {item['reason']}")
        if total["count"] > SHOWN_PER_KIND:
            lines.append(f"    ... and {total['count'] - SHOWN_PER_KIND} more (--json lists all)")
    protected = summary["protected"]
    lines.append(
        f"  protected: {len(protected['model_versions'])} model versions, {len(protected['runs'])} runs, "
        f"data versions {', '.join(protected['data_versions']) or 'none'}"
    )
    lines += [f"  note: {n}" for n in summary["notes"]]
    return "\n".join(lines)

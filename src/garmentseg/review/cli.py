"""`garmentseg review`: the queue from the command line (list, decide) and the retouch round trip (export,
import); thin over review/store.py and review/roundtrip.py."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from garmentseg.cliopts import config_options
from garmentseg.config import load_config
from garmentseg.review.store import STATES, ReviewItem, ReviewQueue, reviewer_name
from garmentseg.review.web import serve_cmd

if TYPE_CHECKING:
    from garmentseg.config import Config


def _queue(profile: str | None, params: str | None) -> tuple[Config, ReviewQueue]:
    cfg = load_config(profile, params)
    return cfg, ReviewQueue.from_config(cfg)


def item_json(item: ReviewItem) -> dict[str, object]:
    """One item as `review list --json` prints it."""
    return {
        "id": item.id,
        "file": item.file,
        "state": item.state,
        "estimate": item.estimate,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
    }


def _reviewer(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """`--by` under the review page's rule for names, so the CLI records no name the page would refuse."""
    try:
        return None if value is None else reviewer_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


by_option = click.option(
    "--by",
    default=None,
    callback=_reviewer,
    help="Who decides (default: the login name); recorded on the item. 1-64 printable characters.",
)


@click.group("review")
def review() -> None:
    """The review queue of doubtful cutouts, and the retouch round trip."""


@review.command("list")
@config_options
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these states.")
@click.option("--json", "as_json", is_flag=True, help='Print {"items": [...]}, worst estimate first.')
def list_cmd(profile: str | None, params: str | None, states: tuple[str, ...], as_json: bool) -> None:
    """The queue, worst estimate first."""
    _, queue = _queue(profile, params)
    items = queue.items(states or None)
    if as_json:
        click.echo(json.dumps({"items": [item_json(i) for i in items]}, indent=2))
        return
    for i in items:
        decided = f"  {i.decided_by} {i.decided_at:%Y-%m-%d %H:%M}" if i.decided_at else ""
        click.echo(f"{i.id:>6}  {i.state:<8}  {i.estimate:.4f}  {i.file}{decided}")


@review.command("stats")
@config_options
@click.option("--json", "as_json", is_flag=True, help='Print {"cutouts": [...]}, newest model first.')
def stats_cmd(profile: str | None, params: str | None, as_json: bool) -> None:
    """Every cutout made for a new shot, per model version and source: how many, the share doubtful, the
    mean and lowest estimate (a model that starts flagging more in production shows here first)."""
    _, queue = _queue(profile, params)
    rows = queue.cutout_stats()
    if as_json:
        click.echo(json.dumps({"cutouts": rows}, indent=2))
        return
    for r in rows:
        click.echo(
            f"model {r['model_version']:<8} {r['source']:<12} {r['cutouts']:>6} cutouts  "
            f"{r['doubtful_share']:6.1%} doubtful  mean estimate {r['mean_estimate']:.4f}  "
            f"lowest {r['lowest_estimate']:.4f}  last {r['last'][:16]}"
        )


@review.command("decide")
@config_options
@click.argument("item_id", type=int)
@click.option("--accept", is_flag=True, help="The cutout is good as it is.")
@click.option("--retouch", is_flag=True, help="Send it to a retoucher.")
@click.option("--reject", is_flag=True, help="The shot is not worth a cutout.")
@by_option
def decide_cmd(
    profile: str | None,
    params: str | None,
    item_id: int,
    accept: bool,
    retouch: bool,
    reject: bool,
    by: str | None,
) -> None:
    """Record a decision on queue item ITEM_ID."""
    given = [name for name, flag in (("accept", accept), ("retouch", retouch), ("reject", reject)) if flag]
    if len(given) != 1:
        conflict = f"{' and '.join(f'--{name}' for name in given)} conflict: " if given else ""
        raise click.UsageError(f"{conflict}give one of --accept, --retouch, --reject")
    (decision,) = given
    _, queue = _queue(profile, params)
    try:
        item = queue.decide(item_id, decision, by or getpass.getuser())
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{item.id} {item.file}: {item.state} by {item.decided_by}")


@review.command("export")
@config_options
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--pending", is_flag=True, help="Also every item still undecided.")
@click.option("--id", "ids", type=click.IntRange(min=1), multiple=True, help="Only this item (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many, worst estimate first.")
def export_cmd(
    profile: str | None,
    params: str | None,
    out_dir: Path,
    pending: bool,
    ids: tuple[int, ...],
    limit: int | None,
) -> None:
    """Write the items sent to retouch to OUT_DIR: raw/<garment>_<View>.png and the proposed
    cutouts/<garment>_<View>.png, to be edited in place and imported back. `--id`/`--limit` give each
    retoucher a share of the queue."""
    from garmentseg.data.plane import DatasetError
    from garmentseg.review.roundtrip import export_items

    cfg, queue = _queue(profile, params)
    try:
        items = export_items(queue, out_dir, cfg, pending=pending, ids=ids, limit=limit)
    except DatasetError as exc:  # checked before anything is written
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(items)} items exported to {out_dir}")


@review.command("import")
@config_options
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@by_option
@click.option("--push/--no-push", default=True, show_default=True, help="Publish to paths.dvc_remote.")
def import_cmd(profile: str | None, params: str | None, folder: Path, by: str | None, push: bool) -> None:
    """Validate the retouched FOLDER, ingest it as a new batch (corrections supersede the dataset's
    labels) and close its queue items. Exit 1 when validation refuses it (it is quarantined whole); exit 2
    when a pair answers no open item (its shot edited, its cutout unchanged, the item closed or rejected):
    the folder is left where it is, each such file named."""
    from garmentseg.data.contract import ContractError
    from garmentseg.data.plane import DatasetError
    from garmentseg.data.versioning import DvcError
    from garmentseg.review.roundtrip import ReturnedFolderError, import_corrections

    cfg, queue = _queue(profile, params)
    try:
        result = import_corrections(cfg, queue, folder, by=by or getpass.getuser(), push=push)
    except ReturnedFolderError as exc:  # answers no open item: left where it is, like an unreadable batch
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (DatasetError, DvcError, ContractError) as exc:  # refused or rolled back: nothing half-ingested
        raise click.ClickException(str(exc)) from exc
    click.echo(result.outcome.message)
    if not result.ok:
        for line in result.refused:
            click.echo(f"refused {line}", err=True)
        sys.exit(result.outcome.exit_code or 1)
    click.echo(f"{len(result.closed)} queue items closed; data version {result.outcome.data_version}")


review.add_command(serve_cmd)  # `garmentseg review serve`: the review page

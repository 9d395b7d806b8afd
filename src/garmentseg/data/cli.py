"""`garmentseg data ...`: synthesise, index, and the data plane (add, version, checkout, push, pull)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from garmentseg.cliopts import config_options
from garmentseg.config import Config, ConfigError, load_config


def _with_config(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--profile/--params on every command; the loaded Config arrives as `cfg`; errors exit 1 with a line."""

    @config_options
    @wraps(fn)
    def wrapper(profile: str | None, params: str | None, **kwargs: Any) -> None:
        try:
            cfg = load_config(profile, params)
            fn(cfg=cfg, **kwargs)
        except (ConfigError, OSError, ValueError, RuntimeError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group()
def data() -> None:
    """Synthesise, index, version and sync studio datasets (DVC)."""


@data.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--garments", type=int, default=None, help="default: synth.garments")
@click.option("--seed", type=int, default=None, help="default: synth.seed")
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--width", type=int, default=None, help="default: the studio source's width")
@click.option("--height", type=int, default=None, help="default: the studio source's height")
@_with_config
def synth(
    cfg: Config,
    out_dir: Path,
    garments: int | None,
    seed: int | None,
    workers: int | None,
    width: int | None,
    height: int | None,
) -> None:
    """Render a synthetic studio batch (raw/, cutouts/, garments.csv) into OUT."""
    from garmentseg.data.synth import synthesize

    s = synthesize(
        out_dir,
        garments or cfg.synth.garments,
        cfg.synth.seed if seed is None else seed,
        cfg,
        workers,
        width=width,
        height=height,
    )
    click.echo(
        f"{s.pairs} pairs from {s.garments} garments in {s.seconds:.1f}s ({s.pairs_per_second:.2f} pairs/s) -> {s.out_dir}"
    )


@data.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="default: paths.data_dir",
)
@click.option("--fresh", is_flag=True, help="re-split every garment by the rule, ignoring the current index")
@_with_config
def index(cfg: Config, data_dir: Path | None, fresh: bool) -> None:
    """(Re)build DATA_DIR/index.parquet over synth/* and batches/*."""
    from garmentseg.data.contract import CUTOUT_DIR, RAW_DIR
    from garmentseg.data.index import BATCHES_DIR, INDEX_FILE, SYNTH_DIR, reindex

    root = data_dir or cfg.path(cfg.paths.data_dir)
    holds = {name for name in (RAW_DIR, CUTOUT_DIR, BATCHES_DIR, SYNTH_DIR) if (root / name).is_dir()}
    if holds & {RAW_DIR, CUTOUT_DIR} and not holds & {BATCHES_DIR, SYNTH_DIR}:
        # its index would hold nothing and shadow the folder for `--dataset`
        raise ValueError(
            f"{root}: a batch in the data contract, not a data dir (which holds {BATCHES_DIR}/ or "
            f"{SYNTH_DIR}/); commands take it as it is with --dataset {root}"
        )
    df = reindex(root, cfg, fresh=fresh)
    counts = df.drop_duplicates("garment_id")["split"].value_counts().to_dict()
    click.echo(f"{len(df)} pairs, {df['garment_id'].nunique()} garments {counts} -> {root / INDEX_FILE}")


@data.command()
@click.argument("batch_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--batch-id", default=None, help="default: the folder's name")
@click.option("--push/--no-push", default=True, show_default=True, help="publish to paths.dvc_remote")
@_with_config
def add(cfg: Config, batch_dir: Path, batch_id: str | None, push: bool) -> None:
    """Copy BATCH_DIR into the dataset, index, track and push it (all or nothing; a retry completes it).
    No validation: for batches the platform made itself (the synthetic studio); a delivery goes through
    `garmentseg ingest`."""
    from garmentseg.data.plane import add_batch

    r = add_batch(batch_dir, cfg, batch_id=batch_id, push=push)
    state = "already present" if r.already_present else "added"
    click.echo(
        f"batch {r.batch_id} {state}: {r.n_pairs} pairs at {r.dataset_path}; data version {r.data_version}"
    )


@data.command()
@_with_config
def version(cfg: Config) -> None:
    """Show the data version, its state against the remote, the git commit and DVC's hashes (JSON)."""
    from garmentseg.data.plane import version_info

    click.echo(json.dumps(version_info(cfg), indent=2))


@data.command()
@click.argument("data_version")
@_with_config
def checkout(cfg: Config, data_version: str) -> None:
    """Restore DATA_VERSION from paths.dvc_remote into the data dir, byte for byte, hashes verified."""
    from garmentseg.data.plane import checkout as checkout_version

    r = checkout_version(cfg, data_version)
    click.echo(
        f"data version {r.data_version}: {len(r.entries)} paths in {r.seconds:.1f}s -> {cfg.paths.data_dir}"
    )


@data.command()
@_with_config
def push(cfg: Config) -> None:
    """Publish the current dataset (objects and manifest) to paths.dvc_remote."""
    from garmentseg.data.plane import publish
    from garmentseg.data.store import remote_url

    r = publish(cfg)
    click.echo(f"data version {r.data_version} pushed to {remote_url(cfg)}")


@data.command()
@_with_config
def pull(cfg: Config) -> None:
    """Fetch from paths.dvc_remote every path of the data version this tree's index names."""
    from garmentseg.data.plane import pull as pull_data

    r = pull_data(cfg)
    click.echo(
        f"data version {r.data_version}: {len(r.entries)} paths in {r.seconds:.1f}s -> {cfg.paths.data_dir}"
    )


@data.command(name="init-dvc")
@_with_config
def init_dvc(cfg: Config) -> None:
    """dvc init (if needed) and paths.dvc_remote as the default remote, in .dvc/config.local."""
    from garmentseg.data.store import remote_url
    from garmentseg.data.versioning import init

    init(cfg.root, remote_url(cfg))
    click.echo(f"DVC ready in {cfg.root}, default remote -> {remote_url(cfg)}")


@data.command(name="contact-sheet")
@click.argument("batch_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_png", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("-n", "count", type=int, default=12, show_default=True, help="shots on the sheet")
@_with_config
def contact_sheet(cfg: Config, batch_dir: Path, out_png: Path, count: int) -> None:
    """Write a PNG of COUNT shots beside their cutouts."""
    from garmentseg.data.preview import contact_sheet as make_sheet

    path = make_sheet(batch_dir, out_png, n=count, max_pixels=cfg.validation.max_pixels)
    click.echo(f"{path} ({path.stat().st_size // 1024} KB)")

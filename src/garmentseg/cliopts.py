"""The options every step command shares, worded once: --profile and --params (which params.yaml and which
profile of it) and --dataset (which data to read)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

profile_option = click.option(
    "--profile",
    default=None,
    help="demo | cpu | gpu | real (default: $GARMENTSEG_PROFILE, then params.yaml's `profile:`).",
)
params_option = click.option(
    "--params",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="params.yaml to use (default: $GARMENTSEG_PARAMS, then the nearest one up from here).",
)


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Both options; the command receives them as `profile` and `params`."""
    return profile_option(params_option(fn))


dataset_option = click.option(
    "--dataset",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data dir or contract folder (default: the DVC dataset, paths.data_dir).",
)

"""`garmentseg serve`: the Bento service on this machine, or `--build` a Bento pinned to today's champion."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from typing import Any

import click

from garmentseg.cliopts import config_options

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--host", default=None, help="Interface to bind (default: serving.host).")
@click.option("--port", type=int, default=None, help="Port (default: serving.port).")
@click.option(
    "--model-uri",
    default=None,
    help="Model to serve (default: $GARMENTSEG_MODEL_URI, then serving.model_uri, the champion alias).",
)
@click.option("--build", is_flag=True, help="Build a Bento pinned to the model's current version instead.")
@config_options
def serve(
    host: str | None,
    port: int | None,
    model_uri: str | None,
    build: bool,
    profile: str | None,
    params: str | None,
) -> None:
    """Serve the cutout API (`bentoml serve bentos/service.py`) until Ctrl-C, or build a pinned Bento."""
    from garmentseg.config import load_config
    from garmentseg.service_runtime import build_bento, start_service

    cfg = load_config(profile, params)
    if build:
        tag, pinned = build_bento(cfg, model_uri)
        click.echo(f"built {tag} serving {pinned}; containerize with: bentoml containerize {tag}")
        return
    host, port = host or cfg.serving.host, port or cfg.serving.port
    proc = start_service(cfg, model_uri, host, port)
    click.echo(f"serving on http://{host}:{port} (pid {proc.pid}); Ctrl-C stops it", err=True)

    signals_seen: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        """Pass the signal on to the server's process group; a second one kills it."""
        signals_seen.append(signum)
        log.info("signal %d: stopping the service", signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if len(signals_seen) > 1 else signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    code = proc.wait()
    sys.exit(0 if code in (0, -signal.SIGTERM) else code)

"""The `garmentseg` command. Thin: each subcommand lives beside the code it drives and loads lazily,
so `garmentseg --help` stays fast and never imports TensorFlow, GX or Airflow."""

from __future__ import annotations

import importlib
import os

import click

from garmentseg.logs import setup_logging

# name -> ("module:attribute", one-line help shown by `garmentseg --help` without importing the module)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("garmentseg.data.cli:data", "Synthesise, index, version and sync studio datasets (DVC)."),
    "validate": ("garmentseg.validation.cli:validate", "Validate a batch with Great Expectations."),
    "ingest": ("garmentseg.validation.cli:ingest", "Validate a batch, then ingest it or quarantine it."),
    "registry": (
        "garmentseg.registry:registry_cli",
        "MLflow registry: register, gate, promote, rollback, show.",
    ),
    "serve": (
        "garmentseg.deploy:serve",
        "Serve the champion over HTTP (BentoML), or build a pinned Bento.",
    ),
    "prepare": ("garmentseg.prepare:prepare_cmd", "Cache the model-input-size tensors of every split."),
    "train": ("garmentseg.training:train_cmd", "Train the U-Net, tune on valid, score test, log to MLflow."),
    "evaluate": ("garmentseg.evaluation:evaluate_cmd", "Score a model at full resolution, with slices."),
    "labels": ("garmentseg.labels.cli:labels", "Audit labels against a model; confirm or release suspects."),
    "predict": ("garmentseg.predict:predict_cmd", "Cut out a folder of shots with a model (RGBA + masks)."),
    "gc": (
        "garmentseg.retention.cli:gc_cmd",
        "Apply the retention policy (params.yaml); --dry-run lists it.",
    ),
    "airflow": (
        "garmentseg.orchestration.run_notes:airflow_cli",
        "Airflow deployment helpers: the API account tasks write DAG-run notes with.",
    ),
    "demo": ("garmentseg.demo:demo", "The whole loop end to end on embedded defaults, with a summary."),
    "review": (
        "garmentseg.review.cli:review",
        "The review queue: list, decide, export and import retouches.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002 - click.Group's signature
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: ARG002 - click.Group's signature
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr = SUBCOMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context) -> object:
        from garmentseg.config import ConfigError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:  # params.yaml or an override: the message says what to fix, no traceback
            raise click.ClickException(str(exc)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level", default=None, help="DEBUG, INFO, WARNING... (default: $GARMENTSEG_LOG_LEVEL or INFO)"
)
def main(log_level: str | None) -> None:
    """garmentseg: garment cutout masks from studio shots, and the platform that keeps the model improving."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    setup_logging(log_level)


if __name__ == "__main__":
    main()

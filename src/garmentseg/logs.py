"""One logging configuration for the CLI, DAG tasks and the service."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once; $GARMENTSEG_LOG_LEVEL overrides the default INFO."""
    chosen = level or os.environ.get("GARMENTSEG_LOG_LEVEL", "INFO")
    logging.basicConfig(level=chosen, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for noisy in (
        "great_expectations",
        "alembic",
        "urllib3",
        "httpx",
        "httpcore",
        "matplotlib",
        "PIL",
        "h5py",
        "absl",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)

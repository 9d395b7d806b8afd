"""Shared fixtures: the project's params, and environment hygiene for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from garmentseg.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _mlflow_env_is_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which Config.tracking_uri honours; undo it after
    each test so one test's (possibly dropped) tracking database never leaks into the next."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # records the value to restore at teardown
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture
def cfg() -> Config:
    """The demo profile of the project's own params.yaml."""
    return load_config("demo", ROOT / "params.yaml")

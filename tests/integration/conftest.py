"""Real engines for integration tests: a migrated temporary Airflow metadata DB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from garmentseg.orchestration.embedded import EmbeddedAirflow

ROOT = Path(__file__).resolve().parents[2]

# garment_retrain's tasks on the promote path, upstream to downstream: the candidate is deployed as the canary
# and checked before `promote` moves the champion (`stop` is the other branch; `rollback` runs only when
# deploy or smoke_test fails). With `airflow.approval: human`, approve_promotion sits between promote_or_stop
# and promote (tests/integration/test_review_dags.py); the default `auto` adds nothing.
RETRAIN_PROMOTE_PATH = (
    "sync_data",
    "validate_training_set",
    "screen_labels",
    "prepare",
    "train",
    "evaluate",
    "register",
    "gate",
    "deploy_canary",
    "serving_check",
    "promote_or_stop",
    "promote",
    "deploy",
    "smoke_test",
)


@pytest.fixture(scope="session")
def embedded_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedAirflow]:
    """The library's embedded Airflow in a temporary home with this checkout's DAGs and params: migrated
    (and its DVC pool created) once per session, its AIRFLOW* settings exported for in-process use."""
    home = tmp_path_factory.mktemp("airflow_home")
    airflow = EmbeddedAirflow(home, ROOT / "dags", ROOT / "params.yaml")
    airflow.prepare("dvc", home / "setup")
    exported = {k: v for k, v in airflow.settings().items() if k.startswith("AIRFLOW")}
    saved = {k: os.environ.get(k) for k in exported}
    os.environ.update(exported)
    yield airflow
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

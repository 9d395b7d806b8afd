"""Real engines for integration tests: a migrated temporary Airflow metadata DB."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# garment_retrain's tasks on the promote path, upstream to downstream (`stop` is the other branch).
RETRAIN_PROMOTE_PATH = (
    "sync_data",
    "validate_training_set",
    "prepare",
    "train",
    "evaluate",
    "register",
    "gate",
    "serving_check",
    "promote_or_stop",
    "promote",
    "deploy",
    "smoke_test",
)


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for an isolated embedded Airflow: SQLite metadata DB in `home`, the project's DAGs."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "GX_ANALYTICS_ENABLED": "False",
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`airflow db migrate` once per session into a temporary AIRFLOW_HOME, exported for in-process use."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_env(home)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    saved = {k: os.environ.get(k) for k in env if k.startswith("AIRFLOW")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW")})
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

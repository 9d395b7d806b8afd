"""A note on a DAG run through Airflow's own public API app (SimpleAuthManager login, a real run in the DB),
written by an account registered the way compose's airflow-init does it, with the least role that may."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.config import load_config
from garmentseg.orchestration.embedded import EmbeddedAirflow, airflow_command
from garmentseg.orchestration.run_notes import note_dag_run
from tests.integration.conftest import ROOT

USER, PASSWORD = "pipeline", "s3cret-for-tests"  # a throwaway test account  # pragma: allowlist secret
ADMIN_PASSWORD = "generated-earlier"  # pragma: allowlist secret


@pytest.fixture
def api(embedded_airflow: EmbeddedAirflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ARG001
    """Airflow's API app over the migrated test DB (embedded_airflow exports its settings): an admin whose
    password the auth manager generated on an earlier start, and the pipeline account (role user)."""
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": ADMIN_PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"admin:admin,{USER}:user")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("AIRFLOW_API_USER", USER)
    monkeypatch.setenv("AIRFLOW_API_PASSWORD", PASSWORD)
    registered = CliRunner().invoke(main, ["airflow", "api-account", "--params", str(ROOT / "params.yaml")])
    assert registered.exit_code == 0, registered.output
    assert json.loads(passwords.read_text()) == {"admin": ADMIN_PASSWORD, USER: PASSWORD}
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(), base_url="http://airflow") as client:
        yield client


def _triggered_run(airflow: EmbeddedAirflow, run_id: str) -> str:
    """A real queued run of garment_retrain in the metadata DB (no scheduler picks it up here)."""
    for args in (("dags", "reserialize"), ("dags", "trigger", "garment_retrain", "--run-id", run_id)):
        subprocess.run(airflow_command(*args), env=airflow.env(), capture_output=True, check=True)
    return run_id


def test_a_drift_note_is_appended_to_the_dag_run_once(embedded_airflow, api):
    cfg = load_config("demo", ROOT / "params.yaml", overrides={"airflow": {"api_url": "http://airflow"}})
    run_id = _triggered_run(embedded_airflow, f"drift-note-{uuid.uuid4().hex[:6]}")
    assert note_dag_run(cfg, "garment_retrain", run_id, "Training set drifted.", client=api) == "noted"
    assert (
        note_dag_run(cfg, "garment_retrain", run_id, "Training set drifted.", client=api) == "already noted"
    )
    token = api.post("/auth/token", json={"username": USER, "password": PASSWORD}).json()["access_token"]
    run = api.get(
        f"/api/v2/dags/garment_retrain/dagRuns/{run_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert run.json()["note"] == "Training set drifted."
    wrong = note_dag_run(cfg, "garment_retrain", "no-such-run", "x", client=api)
    assert wrong.startswith("not noted:") and "404" in wrong


def test_registering_the_api_account_names_the_missing_variable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_API_PASSWORD", raising=False)
    monkeypatch.setenv("AIRFLOW_API_USER", USER)
    passwords = tmp_path / "passwords.json"
    args = [
        "airflow",
        "api-account",
        "--params",
        str(ROOT / "params.yaml"),
        "--passwords-file",
        str(passwords),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "$AIRFLOW_API_PASSWORD" in result.output
    assert not passwords.exists()

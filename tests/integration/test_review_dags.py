"""The review loop in Airflow: the weekly cutout DAG, and the promotion's optional human approval under both
settings of `airflow.approval` (the DAG files read params.yaml when parsed, so each setting parses anew)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from garmentseg.config import load_config
from garmentseg.orchestration.embedded import EmbeddedAirflow, airflow_command
from tests.integration.conftest import ROOT


@pytest.fixture(scope="module")
def dagbag(embedded_airflow: EmbeddedAirflow):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(embedded_airflow.dags_folder))


def test_weekly_review_job_cuts_out_deliveries_on_its_schedule(dagbag) -> None:
    settings = load_config(params_path=ROOT / "params.yaml").airflow
    dag = dagbag.get_dag("garment_review")
    assert dag.timetable.expression == settings.review_schedule
    assert dag.get_task("cut_out_deliveries").upstream_task_ids == {"find_deliveries"}
    assert dag.get_task("cut_out_deliveries").execution_timeout == timedelta(
        minutes=settings.timeout_minutes.cut_out_deliveries
    )
    assert "review" in dag.tags and dag.doc_md


def test_imported_corrections_emit_the_dataset_asset_like_any_batch(dagbag) -> None:
    importing, ingest = dagbag.get_dag("garment_review_import"), dagbag.get_dag("garment_ingest")
    task = importing.get_task("import_corrections")
    assert [a.name for a in task.outlets] == [a.name for a in ingest.get_task("ingest").outlets]
    assert task.pool == ingest.get_task("ingest").pool == "dvc"
    assert type(importing.timetable).__name__ == "NullTimetable"  # one run per returned folder, on demand
    assert set(importing.params) == {"folder", "by"}


def _retrain_graph(embedded_airflow: EmbeddedAirflow, approval: str) -> dict:
    """garment_retrain parsed with `airflow.approval` set, in a fresh interpreter: its promote-side graph."""
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag; "
        f"b = DagBag(dag_folder={str(ROOT / 'dags')!r}); "
        "assert not b.import_errors, b.import_errors; "
        "d = b.get_dag('garment_retrain'); "
        "ids = ('promote_or_stop', 'approve_promotion', 'promote'); "
        "tasks = {t: d.get_task(t) for t in ids if t in d.task_dict}; "
        "branch = d.get_task('promote_or_stop').python_callable; "
        "a = tasks.get('approve_promotion'); "
        "print(json.dumps({"
        "'tasks': sorted(d.task_dict), "
        "'downstream': {t: sorted(x.downstream_task_ids) for t, x in tasks.items()}, "
        "'branch': branch({'passed': True, 'candidate_version': '2', 'reason': 'ok'}, {'passed': True}), "
        "'operator': type(a).__name__ if a else None, "
        "'options': a.options if a else None, "
        "'timeout_s': a.response_timeout.total_seconds() if a else None, "
        "'subject': a.subject if a else None}))"
    )
    env = embedded_airflow.env(GARMENTSEG__AIRFLOW__APPROVAL=approval)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_auto_approval_promotes_straight_after_the_verdict(embedded_airflow: EmbeddedAirflow) -> None:
    graph = _retrain_graph(embedded_airflow, "auto")
    assert "approve_promotion" not in graph["tasks"]
    assert graph["downstream"]["promote_or_stop"] == ["promote", "stop"]
    assert graph["branch"] == "promote"


def test_human_approval_stands_between_the_verdict_and_the_champion(
    embedded_airflow: EmbeddedAirflow,
) -> None:
    hours = load_config(params_path=ROOT / "params.yaml").airflow.approval_timeout_hours
    graph = _retrain_graph(embedded_airflow, "human")
    assert graph["operator"] == "ApprovalOperator" and graph["options"] == ["Approve", "Reject"]
    assert graph["downstream"]["promote_or_stop"] == ["approve_promotion", "stop"]
    assert graph["downstream"]["approve_promotion"] == ["promote"]
    assert graph["branch"] == "approve_promotion"  # a passing verdict goes to the person, not to promote
    assert graph["timeout_s"] == hours * 3600
    assert "xcom_pull(task_ids='register')" in graph["subject"]


def test_an_unknown_approval_setting_is_refused_by_name() -> None:
    from garmentseg.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="approval"):
        load_config(params_path=ROOT / "params.yaml", overrides={"airflow": {"approval": "sometimes"}})


# Answers one Human-in-the-loop request through Airflow's public REST API (the core API app on this
# metadata DB, simple auth manager): GET /auth/token, PATCH .../hitlDetails, then reads it back.
ANSWER_THROUGH_API = """
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app
dag_id, run_id, task_id, option = sys.argv[1:5]
with TestClient(create_app("core")) as api:
    token = api.get("/auth/token").json()["access_token"]
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"
    headers = {"Authorization": f"Bearer {token}"}
    answer = api.patch(path, json={"chosen_options": [option]}, headers=headers)
    detail = api.get(path, headers=headers).json()
print(json.dumps({"status": answer.status_code, "detail": detail}, default=str))
"""


def _awaiting_input(database: Path, proc: subprocess.Popen, log: Path) -> str:
    """The run id once the approval task waits for a person; fails with the log if the run ends first."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            row = db.execute(
                "SELECT run_id FROM task_instance WHERE dag_id = 'approval_probe' "
                "AND task_id = 'approve_promotion' AND state = 'awaiting_input'"
            ).fetchone()
        if row:
            return row[0]
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"approve_promotion never waited for input; log: {log}")


@pytest.mark.parametrize(("option", "promote_state"), [("Approve", "success"), ("Reject", "skipped")])
def test_a_person_answers_the_approval_through_airflows_api(
    embedded_airflow: EmbeddedAirflow, tmp_path: Path, option: str, promote_state: str
) -> None:
    env = embedded_airflow.env(
        AIRFLOW__CORE__DAGS_FOLDER=str(Path(__file__).parent / "hitl_dags"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        GARMENTSEG__AIRFLOW__APPROVAL="human",
    )
    log = tmp_path / "dags-test.log"
    with log.open("w") as sink:
        run = subprocess.Popen(
            airflow_command("dags", "test", "approval_probe"), env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        run_id = _awaiting_input(embedded_airflow.home / "airflow.db", run, log)
        answered = subprocess.run(
            [sys.executable, "-c", ANSWER_THROUGH_API, "approval_probe", run_id, "approve_promotion", option],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert answered.returncode == 0, answered.stderr[-2000:]
        reply = json.loads(answered.stdout.strip().splitlines()[-1])
        assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.kill()
    assert reply["status"] == 200 and reply["detail"]["chosen_options"] == [option]
    assert (
        reply["detail"]["task_instance"]["rendered_fields"]["subject"]
        == "Promote garmentseg-unet v7 to champion?"
    )
    with sqlite3.connect(embedded_airflow.home / "airflow.db") as db:
        states = dict(
            db.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = 'approval_probe' AND run_id = ?",
                (run_id,),
            ).fetchall()
        )
    assert states["approve_promotion"] == "success" and states["promote"] == promote_state

"""The review loop in Airflow: the weekly cutout DAG, and the promotion's optional human approval under both
settings of `airflow.approval` (the DAG files read params.yaml when parsed, so each setting parses anew)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from garmentseg.config import load_config
from garmentseg.orchestration.embedded import EmbeddedAirflow
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

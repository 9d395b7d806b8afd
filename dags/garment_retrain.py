"""
### garment_retrain: the weekly retrain, gated in the MLflow registry

Runs weekly (cron `airflow.retrain_schedule` in params.yaml) and whenever the `garment_dataset` asset
changes (an ingested batch). Each task is one call into `garmentseg.orchestration.tasks`:

sync data (DVC) → validate the training set (GX) → screen its labels (the champion's label audit leaves
suspects out) → prepare tensors → **train on a GPU node** → evaluate (and `drift_check`: the training set's
statistics against the champion's, recorded on the run; a drift beyond `validation.drift_z_warn` is the
task's result and a note on the DAG run, never a failure) →
register (`challenger`) → gate (candidate vs champion on the same test split) → deploy the candidate as the
canary (the instance following `challenger`) → serving check of the canary → promote or stop
(`garmentseg.gate.promotion_verdict`; with `airflow.approval: human` a person first approves the promotion
in Airflow, `approve_promotion`, an `ApprovalOperator`: reject keeps the champion) → deploy (production
follows `champion`) → smoke-test production → **rollback** (only when deploy or the smoke test failed:
`previous` becomes champion again, and the run fails).

GPU placement is configuration (`airflow.placement`): `celery` routes the training task to the Celery
queue `airflow.gpu_queue`; `kubernetes` runs it as a pod requesting `nvidia.com/gpu` with the node selector
and tolerations of `airflow.kubernetes`; `local` runs it wherever the scheduler's executor does. A machine
without a GPU trains on CPU with the same code. A failure anywhere leaves the champion untouched: only the
`promote` task moves the alias, and only after a passing gate and a passing check of the canary; only
`rollback` moves it back. Retries and timeouts:
`airflow.retries`, `airflow.retry_delay_minutes`, `airflow.timeout_minutes`.

Run params: `profile` (params.yaml profile) and `overrides` (a params.yaml fragment, e.g.
`{"training": {"epochs": 1}}` for a deliberately weak candidate).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, TriggerRule, dag, task

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import (
    APPROVAL_TASK,
    dataset_asset,
    default_args,
    gpu_task,
    human_approval,
    run_params,
    timeout,
)

CFG = tasks.config_for()
# The promote branch starts at the person's approval when `airflow.approval` is human, else at promote.
PROMOTE_ENTRY = APPROVAL_TASK if CFG.airflow.approval == "human" else "promote"


@task(pool=CFG.airflow.dvc_pool)
def sync_data(params=None) -> dict:
    return tasks.sync_data(tasks.config_for(params), params)


@task(pool=CFG.airflow.dvc_pool)
def validate_training_set(data: dict, params=None) -> dict:
    return tasks.validate_training_set(tasks.config_for(params), data)


@task
def screen_labels(data: dict, params=None) -> dict:
    return tasks.screen_labels(tasks.config_for(params), data)


@task(pool=CFG.airflow.dvc_pool, execution_timeout=timeout(CFG, "prepare"))
def prepare(params=None) -> dict:
    return tasks.prepare_tensors(tasks.config_for(params))


@gpu_task(CFG)
def train(data: dict, screening: dict) -> dict:
    from airflow.sdk.exceptions import AirflowFailException

    from garmentseg.orchestration import tasks  # a Kubernetes pod gets this function's source only
    from garmentseg.training import NotTrainable

    try:
        return tasks.train_candidate(tasks.config_for(data["run"]), data, screening)
    except NotTrainable as exc:  # the data decides, so a retry could only say it again
        raise AirflowFailException(str(exc)) from None


@task
def drift_check(validated: dict, trained: dict, params=None) -> dict:
    from airflow.sdk import get_current_context

    run = get_current_context()["dag_run"]
    dag_run = {"dag_id": run.dag_id, "run_id": run.run_id}
    return tasks.drift_check(tasks.config_for(params), validated, trained, dag_run)


@task(execution_timeout=timeout(CFG, "evaluate"))
def evaluate(trained: dict, params=None) -> dict:
    return tasks.evaluate_candidate(tasks.config_for(params), trained)


@task
def register(trained: dict, params=None) -> dict:
    return tasks.register_candidate(tasks.config_for(params), trained)


@task(execution_timeout=timeout(CFG, "gate"))
def gate(candidate: dict, data: dict, params=None) -> dict:
    return tasks.gate_candidate(tasks.config_for(params), candidate, data)


@task(execution_timeout=timeout(CFG, "deploy"))
def deploy_canary(candidate: dict, decision: dict, params=None) -> dict:
    return tasks.deploy_canary(tasks.config_for(params), candidate, decision)


@task(execution_timeout=timeout(CFG, "serving_check"))
def serving_check(candidate: dict, decision: dict, canary: dict, params=None) -> dict:
    return tasks.serving_check(tasks.config_for(params), candidate, decision, canary)


@task.branch
def promote_or_stop(decision: dict, check: dict) -> str:
    from garmentseg.gate import promotion_verdict

    return PROMOTE_ENTRY if promotion_verdict(decision, check).promote else "stop"


@task
def promote(candidate: dict, params=None) -> dict:
    return tasks.promote_candidate(tasks.config_for(params), candidate)


@task
def stop(decision: dict, check: dict, params=None) -> dict:
    return tasks.stop_candidate(tasks.config_for(params), decision, check)


@task(execution_timeout=timeout(CFG, "deploy"))
def deploy(promotion: dict, params=None) -> dict:
    return tasks.deploy_champion(tasks.config_for(params), promotion)


@task(execution_timeout=timeout(CFG, "smoke_test"))
def smoke_test(deployment: dict, params=None) -> dict:
    return tasks.smoke_test(tasks.config_for(params), deployment)


@task(trigger_rule=TriggerRule.ONE_FAILED)
def rollback(candidate: dict, params=None) -> dict:
    return tasks.roll_back(tasks.config_for(params), candidate)


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CFG.airflow.retrain_schedule, timezone="UTC"),
        assets=[dataset_asset(CFG)],
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    params=run_params(CFG),
    tags=["garmentseg", "training", "registry"],
    doc_md=__doc__,
)
def garment_retrain():
    data = sync_data()
    screening = screen_labels(data)
    trained = train(data, screening)
    validated = validate_training_set(data)
    validated >> screening >> prepare() >> trained
    drift_check(validated, trained)
    candidate = register(trained)
    evaluate(trained) >> candidate
    decision = gate(candidate, data)
    check = serving_check(candidate, decision, deploy_canary(candidate, decision))
    promotion = promote(candidate)
    approval = human_approval(CFG)
    if approval is not None:
        approval >> promotion
    promote_or_stop(decision, check) >> [approval or promotion, stop(decision, check)]
    deployment = deploy(promotion)
    [deployment, smoke_test(deployment)] >> rollback(candidate)


garment_retrain()

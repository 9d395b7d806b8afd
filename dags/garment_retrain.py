"""
### garment_retrain: the weekly retrain, gated in the MLflow registry

Runs weekly (cron `airflow.retrain_schedule` in params.yaml) and whenever the `garment_dataset` asset
changes (an ingested batch). Each task is one call into `garmentseg.orchestration.tasks`:

sync data (DVC) → validate the training set (GX) → prepare tensors → **train on a GPU node** → evaluate →
register (`challenger`) → gate (candidate vs champion on the same test split) → serving check of the
candidate → promote or stop → deploy → smoke-test the endpoint.

GPU placement is configuration (`airflow.placement`): `celery` routes the training task to the Celery
queue `airflow.gpu_queue`; `kubernetes` runs it as a pod requesting `nvidia.com/gpu` with the node selector
and tolerations of `airflow.kubernetes`; `local` runs it wherever the scheduler's executor does. A machine
without a GPU trains on CPU with the same code. A failure anywhere leaves the champion untouched: only the
`promote` task moves the alias, and only after a passing gate and serving check.

Run params: `profile` (params.yaml profile) and `overrides` (a params.yaml fragment, e.g.
`{"training": {"epochs": 1}}` for a deliberately weak candidate).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from garmentseg.orchestration.dag_support import DEFAULT_ARGS, dag_config, dataset_asset, gpu_task, run_params

CFG = dag_config()


@dag(
    dag_id="garment_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CFG.airflow.retrain_schedule, timezone="UTC"),
        assets=[dataset_asset(CFG)],
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=run_params(CFG),
    tags=["garmentseg", "training", "registry"],
    doc_md=__doc__,
)
def garment_retrain():
    @task(pool=CFG.airflow.dvc_pool)
    def sync_data(params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.sync_data(tasks.config_for(params))

    @task(pool=CFG.airflow.dvc_pool)
    def validate_training_set(data: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.validate_training_set(tasks.config_for(params), data)

    @task(pool=CFG.airflow.dvc_pool, execution_timeout=timedelta(hours=2))
    def prepare(data: dict, validation: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.prepare_tensors(tasks.config_for(params), data)

    @gpu_task(CFG)
    def train(data: dict, prepared: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.train_candidate(tasks.config_for(params), data)

    @task(execution_timeout=timedelta(hours=2))
    def evaluate(trained: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.evaluate_candidate(tasks.config_for(params), trained)

    @task
    def register(trained: dict, evaluated: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.register_candidate(tasks.config_for(params), trained)

    @task(execution_timeout=timedelta(hours=2))
    def gate(candidate: dict, data: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.gate_candidate(tasks.config_for(params), candidate, data)

    @task(execution_timeout=timedelta(minutes=30))
    def serving_check(candidate: dict, decision: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.serving_check(tasks.config_for(params), candidate, decision)

    @task.branch
    def promote_or_stop(decision: dict, check: dict) -> str:
        return "promote" if decision["passed"] and check["passed"] else "stop"

    @task
    def promote(candidate: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.promote_candidate(tasks.config_for(params), candidate)

    @task
    def stop(decision: dict, check: dict) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.explain_stop(decision, check)

    @task(execution_timeout=timedelta(minutes=30))
    def deploy(promotion: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.deploy_champion(tasks.config_for(params), promotion)

    @task(execution_timeout=timedelta(minutes=10))
    def smoke_test(deployment: dict, params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.smoke_test(tasks.config_for(params), deployment)

    data = sync_data()
    validation = validate_training_set(data)
    prepared = prepare(data, validation)
    trained = train(data, prepared)
    evaluated = evaluate(trained)
    candidate = register(trained, evaluated)
    decision = gate(candidate, data)
    check = serving_check(candidate, decision)
    branch = promote_or_stop(decision, check)
    promotion = promote(candidate)
    branch >> [promotion, stop(decision, check)]
    smoke_test(deploy(promotion))


garment_retrain_dag = garment_retrain()

"""
### garment_retention: the monthly retention policy

Runs on `retention.schedule` in params.yaml (monthly). One task, `collect_garbage`, applies `retention:`
through `garmentseg.retention`, exactly as `garmentseg gc` does: landed folders already byte-identical in the
pushed dataset, old quarantine entries and reports, MLflow runs no registered model version came from, and
DVC objects and manifests of data versions no registered model names. Nothing a registered model's lineage
names is removed; the task's result lists the counts, the protected lineage and what was kept and why.
Preview with `garmentseg gc --dry-run`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, task

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import default_args

CFG = tasks.config_for()


@task(pool=CFG.airflow.dvc_pool)
def collect_garbage() -> dict:
    return tasks.collect_garbage(tasks.config_for())


@dag(
    schedule=CronTriggerTimetable(CFG.retention.schedule, timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["garmentseg", "retention"],
    doc_md=__doc__,
)
def garment_retention():
    collect_garbage()


garment_retention()

"""
### approval_probe: the retrain's approval step alone

`dag_support.human_approval` between stand-ins for the retrain's register/gate and promote tasks, so
tests/integration/test_review_dags.py can answer it through Airflow's REST API in seconds, not a retrain.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import human_approval


@task
def register() -> dict:
    return {"model_name": "garmentseg-unet", "version": "7"}


@task
def gate() -> dict:
    return {"reason": "dice_median 0.95 >= floor 0.85"}


@task
def promote() -> str:
    return "promoted"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["test"])
def approval_probe():
    [register(), gate()] >> human_approval(tasks.config_for()) >> promote()


approval_probe()

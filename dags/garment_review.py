"""
### garment_review: the week's new deliveries cut out, the doubtful ones queued for review

Runs weekly (cron `airflow.review_schedule` in params.yaml, before the retrain). Studios drop new shots as
one folder per delivery under `paths.deliveries_dir`; each delivery not cut out yet is cut out with the
champion exactly as `garmentseg predict` does (cutouts, masks and scores under `paths.cutouts_dir`), and
every cutout whose estimated Dice is below the review policy enters the review queue (`garmentseg review
serve`, `garmentseg review list`). A delivery is cut out once; a shot already queued is not queued again.

Corrections come back through `garmentseg review import`, an ingest like any batch: the new data version
emits the `garment_dataset` asset, which triggers `garment_retrain`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowSkipException

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import default_args, timeout

CFG = tasks.config_for()


@task
def find_deliveries() -> list[str]:
    deliveries = tasks.new_deliveries(tasks.config_for())
    if not deliveries:
        raise AirflowSkipException(f"no new delivery under {CFG.paths.deliveries_dir}")
    return deliveries


@task(execution_timeout=timeout(CFG, "cut_out_deliveries"))
def cut_out_deliveries(deliveries: list[str]) -> dict:
    return tasks.cut_out_deliveries(tasks.config_for(), deliveries)


@dag(
    schedule=CFG.airflow.review_schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["garmentseg", "review"],
    doc_md=__doc__,
)
def garment_review():
    cut_out_deliveries(find_deliveries())


garment_review()

"""
### garment_review: the week's new deliveries cut out, the doubtful ones queued for review

Runs weekly (cron `airflow.review_schedule` in params.yaml, before the retrain). Studios drop new shots as
one folder per delivery under `paths.deliveries_dir`; each delivery not cut out yet is cut out with the
champion exactly as `garmentseg predict` does (cutouts, masks and scores under `paths.cutouts_dir`), and
every cutout whose estimated Dice is below the review policy enters the review queue (`garmentseg review
serve`, `garmentseg review list`). A delivery is cut out once; a shot already queued is not queued again.

`garment_review_import`: the retouchers' corrections come back. One run per returned folder (param
`folder`, as `garmentseg review export` wrote it, cutouts edited in place): validated with the GX suite and
ingested as a new batch through the one ingest path (a correction supersedes the dataset's label), its queue
items closed, and the `garment_dataset` asset emitted like any ingested batch, which triggers
`garment_retrain`. The same folder twice changes nothing (skipped, no asset); a refused folder fails the run,
naming the files and the reasons, and is quarantined whole. (`garmentseg review import` is the same call
from a terminal; there no asset is emitted, as with `garmentseg ingest`: the weekly retrain picks it up.)
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import dataset_asset, default_args, timeout

CFG = tasks.config_for()
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@task
def find_deliveries() -> list[str]:
    deliveries = tasks.new_deliveries(tasks.config_for())
    if not deliveries:
        raise AirflowSkipException(f"no new delivery under {CFG.paths.deliveries_dir}")
    return deliveries


@task(execution_timeout=timeout(CFG, "cut_out_deliveries"))
def cut_out_deliveries(deliveries: list[str]) -> dict:
    return tasks.cut_out_deliveries(tasks.config_for(), deliveries)


@task(pool=CFG.airflow.dvc_pool, outlets=[dataset_asset(CFG)])
def import_corrections(params=None) -> dict:
    imported = tasks.import_returned_corrections(tasks.config_for(), params["folder"], params["by"])
    if not imported["ok"]:  # no retry: only a new return can change the answer
        raise AirflowFailException(f"{imported['message']}; refused: {'; '.join(imported['refused'])}")
    if not imported["changed"]:
        raise AirflowSkipException(
            f"{params['folder']} was imported before ({imported['batch_id']}); no new data"
        )
    return imported


@dag(
    schedule=CFG.airflow.review_schedule,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["garmentseg", "review"],
    doc_md=__doc__,
)
def garment_review():
    cut_out_deliveries(find_deliveries())


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    default_args=default_args(CFG),
    params={
        "folder": Param(type="string", description="The returned folder: raw/ and the corrected cutouts/."),
        "by": Param("retouch", type="string", description="Recorded on the queue items it closes."),
    },
    tags=["garmentseg", "review", "data"],
    doc_md=__doc__,
)
def garment_review_import():
    import_corrections()


garment_review()
garment_review_import()

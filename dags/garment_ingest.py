"""
### garment_ingest: one run per landed batch

Studios drop each batch as a folder `<landing_dir>/<batch_id>/` (raw/ + cutouts/, see the data contract).
`garment_landing_scan` looks at the landing folder on `airflow.ingest_schedule` and triggers one
`garment_ingest` run per new batch, with the batch id as the run id (so a batch is never ingested twice); a
corrected re-delivery under a quarantined id is new content, so it is scanned again under its own run.

`garment_ingest`: validate with Great Expectations (the report and the Data Docs site are rebuilt under
`reports_dir`), then act on the library's route, the same one `garmentseg ingest` follows:
- pass: add the batch to the DVC dataset (index, splits, `dvc add`) and emit the `garment_dataset` asset,
  which triggers `garment_retrain`;
- fail: move the whole batch to the quarantine folder with its report; nothing is lost;
- not a readable batch at all (e.g. no raw/ folder): `validate` fails, naming the folder and the reason, and
  the batch stays where it landed. Its run `batch__<id>` exists, so the scan does not start it again: fix
  the delivery, then clear the failed task.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from garmentseg.orchestration import tasks
from garmentseg.orchestration.dag_support import dataset_asset, default_args

CFG = tasks.config_for()
START = pendulum.datetime(2026, 1, 1, tz="UTC")


@task
def find_new_batches() -> list[dict]:
    cfg = tasks.config_for()
    return [
        {"trigger_run_id": tasks.ingest_run_id(cfg, batch_id), "conf": {"batch_id": batch_id}}
        for batch_id in tasks.new_landed_batches(cfg)
    ]


@task
def validate(params=None) -> dict:
    routed = tasks.route_landed_batch(tasks.config_for(), params["batch_id"])
    if routed["action"] == "leave":  # no retry: only a new delivery can change the answer
        raise AirflowFailException(f"{routed['reason']}; left where it landed: {routed['batch_dir']}")
    return routed


@task.branch
def ingest_or_quarantine(routed: dict) -> str:
    return routed["action"]  # the task id: ingest | quarantine


@task(pool=CFG.airflow.dvc_pool, outlets=[dataset_asset(CFG)])
def ingest(routed: dict, ti=None) -> dict:
    outcome = tasks.ingest_landed_batch(tasks.config_for(), routed)
    # On a retry "already in the dataset" means an earlier try of this run added it and may have died
    # before its asset event: emit it (a retrain of data it already trained on reuses that run).
    if not outcome["changed"] and ti.try_number == 1:
        raise AirflowSkipException(f"batch {routed['batch_id']} is already in the dataset; no new data")
    return outcome


@task
def quarantine(routed: dict) -> dict:
    return tasks.quarantine_landed_batch(tasks.config_for(), routed)


@dag(
    schedule=CFG.airflow.ingest_schedule,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(CFG),
    tags=["garmentseg", "data"],
    doc_md=__doc__,
)
def garment_landing_scan():
    TriggerDagRunOperator.partial(
        task_id="trigger_ingest", trigger_dag_id="garment_ingest", skip_when_already_exists=True
    ).expand_kwargs(find_new_batches())


@dag(
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,  # validation checks against the dataset: a batch admitted meanwhile would go unseen
    default_args=default_args(CFG),
    params={"batch_id": Param(type="string", description="Folder name of the batch under the landing dir.")},
    tags=["garmentseg", "data", "validation"],
    doc_md=__doc__,
)
def garment_ingest():
    routed = validate()
    ingest_or_quarantine(routed) >> [ingest(routed), quarantine(routed)]


garment_landing_scan()
garment_ingest()

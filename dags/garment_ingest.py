"""
### garment_ingest: one run per landed batch

Studios drop each batch as a folder `<landing_dir>/<batch_id>/` (raw/ + cutouts/, see the data contract).
`garment_landing_scan` looks at the landing folder on `airflow.ingest_schedule` and triggers one
`garment_ingest` run per new batch, with the batch id as the run id (so a batch is never ingested twice).

`garment_ingest`: validate with Great Expectations → branch:
- pass: add the batch to the DVC dataset (index, splits, `dvc add`), publish Data Docs, and emit the
  `garment_dataset` asset, which triggers `garment_retrain`;
- fail: move the whole batch to the quarantine folder with its report; nothing is lost.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from garmentseg.orchestration.dag_support import DEFAULT_ARGS, dag_config, dataset_asset

CFG = dag_config()
DATASET_ASSET = dataset_asset(CFG)

START = pendulum.datetime(2026, 1, 1, tz="UTC")


@dag(
    dag_id="garment_landing_scan",
    schedule=CFG.airflow.ingest_schedule,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["garmentseg", "data"],
    doc_md=__doc__,
)
def garment_landing_scan():
    @task
    def find_new_batches() -> list[dict]:
        from garmentseg.orchestration import tasks

        return [
            {"trigger_run_id": f"batch__{batch_id}", "conf": {"batch_id": batch_id}}
            for batch_id in tasks.new_landed_batches(tasks.config_for())
        ]

    TriggerDagRunOperator.partial(
        task_id="trigger_ingest", trigger_dag_id="garment_ingest", skip_when_already_exists=True
    ).expand_kwargs(find_new_batches())


@dag(
    dag_id="garment_ingest",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args=DEFAULT_ARGS,
    params={"batch_id": Param(type="string", description="Folder name of the batch under the landing dir.")},
    tags=["garmentseg", "data", "validation"],
    doc_md=__doc__,
)
def garment_ingest():
    @task
    def validate(params=None) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.validate_landed_batch(tasks.config_for(), params["batch_id"])

    @task.branch
    def ingest_or_quarantine(report: dict) -> str:
        return "ingest" if report["passed"] else "quarantine"

    @task(pool=CFG.airflow.dvc_pool, outlets=[DATASET_ASSET])
    def ingest(report: dict) -> dict:
        from garmentseg.orchestration import tasks

        outcome = tasks.ingest_landed_batch(tasks.config_for(), report)
        if not outcome["changed"]:
            raise AirflowSkipException(f"batch {report['batch_id']} is already in the dataset; no new data")
        return outcome

    @task
    def quarantine(report: dict) -> dict:
        from garmentseg.orchestration import tasks

        return tasks.quarantine_landed_batch(tasks.config_for(), report)

    @task(trigger_rule="none_failed_min_one_success")
    def publish_data_docs(report: dict) -> str:
        from garmentseg.orchestration import tasks

        return tasks.publish_data_docs(tasks.config_for(), report)

    report = validate()
    branch = ingest_or_quarantine(report)
    done = [ingest(report), quarantine(report)]
    branch >> done
    done >> publish_data_docs(report)


garment_landing_scan_dag = garment_landing_scan()
garment_ingest_dag = garment_ingest()

"""MLflow runs of the project's experiment that no registered model version came from, once they are
`retention.mlflow_run_days` old: the run (soft-deleted, so `mlflow gc` can purge it later), its artifacts
and the models it logged (MLflow 3 keeps those apart from the run's artifacts) are removed. A run still
running is never collected."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from garmentseg.retention.plan import Item, Lineage

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

KIND = "mlflow-run"


def collect(cfg: Config, lineage: Lineage, now: datetime) -> tuple[list[Item], list[str]]:
    from garmentseg.registry import mlflow_client

    client = mlflow_client(cfg)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is None:
        return [], []
    days = cfg.retention.mlflow_run_days
    cutoff_ms = (now.timestamp() - days * 86400) * 1000
    items = []
    for run in _finished_runs(client, experiment.experiment_id):
        if run.info.run_id in lineage.run_ids or (run.info.end_time or run.info.start_time) > cutoff_ms:
            continue
        ended = datetime.fromtimestamp((run.info.end_time or run.info.start_time) / 1000, UTC)
        reason = f"no registered model version came from it; ended {ended:%Y-%m-%d} (>= {days:g} days)"
        items.append(Item(KIND, run.info.run_id, reason))
    return items, []


def _finished_runs(client: Any, experiment_id: str) -> list[Any]:
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="attributes.status != 'RUNNING'", max_results=500, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


def sweep(cfg: Config, items: list[Item]) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from garmentseg.registry import mlflow_client

    client = mlflow_client(cfg)
    for item in items:
        run = client.get_run(item.target)
        for model in client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{item.target}'"
        ):
            get_artifact_repository(model.artifact_location).delete_artifacts()
            client.delete_logged_model(model.model_id)
        get_artifact_repository(run.info.artifact_uri).delete_artifacts()
        client.delete_run(item.target)
        log.info("removed MLflow run %s: %s", item.target, item.reason)

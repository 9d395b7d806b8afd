"""What the Airflow DAGs share: the dataset asset, run params, retries and timeouts, GPU placement.

Only the DAG files import this; Airflow itself is imported inside the functions, so the library stays
importable without it. Everything is read from the Config (params.yaml, the one source of truth for DAGs,
CLI and service) that the DAG files load with `tasks.config_for()`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from garmentseg.config import Config


def timeout(cfg: Config, task_id: str) -> timedelta:
    """The execution_timeout `airflow.timeout_minutes` gives this task (`default` for the rest)."""
    return timedelta(minutes=getattr(cfg.airflow.timeout_minutes, task_id))


def default_args(cfg: Config) -> dict[str, Any]:
    """Every task's owner, retries, retry delay and default timeout, from `airflow` in params.yaml."""
    return {
        "owner": "platform",
        "retries": cfg.airflow.retries,
        "retry_delay": timedelta(minutes=cfg.airflow.retry_delay_minutes),
        "execution_timeout": timeout(cfg, "default"),
    }


def dataset_asset(cfg: Config) -> Any:
    """The DVC dataset's index as an Airflow asset: ingest emits it, the retrain DAG is scheduled on it."""
    from airflow.sdk import Asset

    index = cfg.path(cfg.paths.data_dir).resolve() / "index.parquet"
    return Asset(name="garment_dataset", uri=f"file://{index}", group="garmentseg")


def run_params(cfg: Config) -> dict[str, Any]:
    """The retrain's run params: a profile and a params.yaml fragment over it."""
    from airflow.sdk import Param

    return {
        "profile": Param(cfg.profile, type="string", description="params.yaml profile to run with."),
        "overrides": Param(
            {},
            type="object",
            description='params.yaml fragment merged last, e.g. {"training": {"epochs": 1}}.',
        ),
    }


def gpu_task(cfg: Config, **kwargs: Any) -> Any:
    """The decorator for the GPU training task, by `airflow.placement` (celery | kubernetes | local)."""
    from airflow.sdk import task

    kwargs.setdefault("execution_timeout", timeout(cfg, "train"))
    placement = cfg.airflow.placement
    if placement == "kubernetes":
        from kubernetes.client import models as k8s

        k8s_cfg = cfg.airflow.kubernetes
        gpus = {"nvidia.com/gpu": str(k8s_cfg.gpu_limit)}
        return task.kubernetes(
            image=k8s_cfg.image,
            namespace=k8s_cfg.namespace,
            pod_template_file=k8s_cfg.pod_template_file,
            node_selector=dict(k8s_cfg.node_selector),
            tolerations=[k8s.V1Toleration(**t) for t in k8s_cfg.tolerations],
            container_resources=k8s.V1ResourceRequirements(limits=gpus, requests=gpus),
            do_xcom_push=True,
            **kwargs,
        )
    if placement == "celery":
        kwargs["queue"] = cfg.airflow.gpu_queue
    return task(**kwargs)


APPROVAL_TASK = "approve_promotion"


def human_approval(cfg: Config) -> Any | None:
    """With `airflow.approval: human`, the ApprovalOperator a person answers before `promote` moves the
    champion (Airflow's Required Actions page or its HITL REST API); None with `auto`. Reject skips the
    promotion; no answer within `airflow.approval_timeout_hours` fails the task, so the champion stays."""
    if cfg.airflow.approval != "human":
        return None
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    candidate = "ti.xcom_pull(task_ids='register')"
    decision = "ti.xcom_pull(task_ids='gate')"
    return ApprovalOperator(
        task_id=APPROVAL_TASK,
        subject=f"Promote {{{{ {candidate}['model_name'] }}}} v{{{{ {candidate}['version'] }}}} to champion?",
        body=(
            f"The gate passed: {{{{ {decision}['reason'] }}}}.\n\n"
            "The canary's serving check passed. Approve to move `champion` (then deploy and smoke test); "
            "reject to keep the current champion."
        ),
        response_timeout=timedelta(hours=cfg.airflow.approval_timeout_hours),
    )

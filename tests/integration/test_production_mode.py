"""Production mode on this machine's real services: Airflow with the CeleryExecutor on PostgreSQL and Redis,
an MLflow server on PostgreSQL, all as separate processes; the retrain DAG, triggered through Airflow's REST
API, runs on the Celery worker and leaves a champion in the PostgreSQL-backed registry.

    uv run pytest tests/integration/test_production_mode.py -m production -q -s

Skips (loudly) only when PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is unreachable. Every
process is stopped at the end, pass or fail; a failing test prints each process's last log lines and the
failed tasks' logs. Nothing under the repository's data/ or var/ is touched: the DAGs run a tiny project in
a temporary folder (its own params.yaml, dags/ and data), configured only through the environment.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration import production as prod
from tests.integration.conftest import RETRAIN_PROMOTE_PATH
from tests.integration.pg import postgres_database

pytestmark = [pytest.mark.production, pytest.mark.slow, pytest.mark.timeout(900)]

MODEL_NAME = "garmentseg-unet"

# The tiny project: everything below is a GARMENTSEG__SECTION__KEY override of the copied params.yaml, read
# by every process (Airflow's and the worker's tasks, the Bento services they start), exactly like the
# production settings of infra/README.md. Eight 288x432 garments (seed 2: 4 train, 2 valid, 2 test
# garments), a 64x32 U-Net of depth 4 (multiples of 2**4), two epochs.
TINY_PROJECT = {
    "GARMENTSEG_PROFILE": "demo",
    "GARMENTSEG__AIRFLOW__PLACEMENT": "celery",
    "GARMENTSEG__SYNTH__GARMENTS": "8",
    "GARMENTSEG__SYNTH__SEED": "2",
    "GARMENTSEG__SOURCES__STUDIO__WIDTH": "288",
    "GARMENTSEG__SOURCES__STUDIO__HEIGHT": "432",
    "GARMENTSEG__MODEL__INPUT_HEIGHT": "64",
    "GARMENTSEG__MODEL__INPUT_WIDTH": "32",
    "GARMENTSEG__TRAINING__EPOCHS": "2",
    "GARMENTSEG__VALIDATION__WORKERS": "1",
    # Two epochs reach a test Dice of about 0.2: the floor is the demo profile's quality bar, not what this
    # test is about (the wiring is). The gate still runs for real, in bootstrap mode (no champion yet).
    "GARMENTSEG__REGISTRY__DICE_FLOOR": "0.0",
    # Two shared, busy cores: the serving check's latency budget is the wiring's, not a performance claim.
    "GARMENTSEG__SERVING__LATENCY_BUDGET_MS": "30000",
    "GX_ANALYTICS_ENABLED": "False",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "BENTOML_DO_NOT_TRACK": "True",
    "DVC_NO_ANALYTICS": "1",
}

STARTUP_TIMEOUT_S = 300
LANDING_SCAN_TIMEOUT_S = 180
RETRAIN_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[prod.Stack, prod.AirflowApi]]:
    """The whole platform, started once for this module and stopped (all of it) at the end."""
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("production")
    with ExitStack() as resources:
        # Skips loudly here when PostgreSQL or Redis is absent; each resource is dropped on the way out.
        broker = resources.enter_context(prod.redis_database())
        airflow_db = resources.enter_context(postgres_database("garmentseg_prod_airflow"))
        mlflow_db = resources.enter_context(postgres_database("garmentseg_prod_mlflow"))
        project = prod.make_project(workdir)
        logs = workdir / "logs"
        logs.mkdir()
        stack = prod.Stack(
            workdir=workdir,
            project=project,
            logs=logs,
            env=prod.base_env(
                GARMENTSEG_PARAMS=str(project / "params.yaml"),
                # nothing answers here, so the deploy step reports "no running service" and the smoke
                # test starts a temporary service (never one another checkout runs on :3000); likewise
                # no canary answers, so the serving check serves the candidate in a temporary service
                GARMENTSEG__SERVING__PORT=str(prod.free_port()),
                GARMENTSEG__SERVING__CANARY_PORT=str(prod.free_port()),
                BENTOML_HOME=str(workdir / "bentoml"),
                **TINY_PROJECT,
            ),
        )
        resources.callback(_stop, stack)  # registered before anything starts: runs on every way out
        try:
            # the tiny dataset, as the data CLI builds it (no DVC files: sync_data has nothing to pull)
            stack.run("data-synth", prod.garmentseg_cli("data", "synth", "--out", "data/synth/demo"), 180)
            stack.run("data-index", prod.garmentseg_cli("data", "index"), 180)
            _check_splits(project)
            api = prod.start_stack(
                stack,
                airflow_db=airflow_db,
                mlflow_db=mlflow_db,
                broker_url=broker,
                startup_timeout_s=STARTUP_TIMEOUT_S,
            )
            stack.wait_for("DAGs parsed and serialized", lambda: _dags_parsed(api), STARTUP_TIMEOUT_S, 3)
        except BaseException:
            print("\n[production] the stack did not come up:\n" + stack.report(60), flush=True)
            raise
        print(f"[production] stack up in {time.monotonic() - started:.0f}s; logs in {logs}", flush=True)
        print("[production] environment:\n" + _env_report(stack), flush=True)
        yield stack, api


def _check_splits(project: Path) -> None:
    """Training, threshold tuning and the gate need garments in train, valid and test: say so up front."""
    import pandas as pd

    garments = pd.read_parquet(project / "data" / "index.parquet").drop_duplicates("garment_id")
    counts = garments["split"].value_counts().to_dict()
    assert all(counts.get(s, 0) > 0 for s in ("train", "valid", "test")), (
        f"the tiny dataset's garment splits are {counts}: change GARMENTSEG__SYNTH__SEED/GARMENTS in "
        "TINY_PROJECT so that train, valid and test each get a garment"
    )


def _dags_parsed(api: prod.AirflowApi) -> bool:
    if errors := api.import_errors():
        raise prod.Fatal(
            "DAG import errors:\n" + "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors)
        )
    return all(api.dag(d) for d in ("garment_landing_scan", "garment_retrain"))


def _stop(stack: prod.Stack) -> None:
    started = time.monotonic()
    notes = stack.stop()
    print(f"[production] stack stopped in {time.monotonic() - started:.0f}s {notes or ''}", flush=True)


def _env_report(stack: prod.Stack) -> str:
    secret = ("FERNET_KEY", "SECRET_KEY", "JWT_SECRET")
    keys = sorted(k for k in stack.env if k.startswith(("AIRFLOW", "GARMENTSEG", "MLFLOW", "BENTOML")))
    return "\n".join(f"  {k}={'<generated>' if k.endswith(secret) else stack.env[k]}" for k in keys)


def _explain(stack: prod.Stack, api: prod.AirflowApi, dag_id: str, run_id: str) -> str:
    """Task states and the logs of every task that did not succeed."""
    home = Path(stack.env["AIRFLOW_HOME"])
    parts = []
    try:
        tis = api.task_instances(dag_id, run_id)
        parts.append("task states: " + json.dumps({t["task_id"]: t["state"] for t in tis}))
        for ti in tis:
            if ti["state"] not in ("success", "skipped"):
                parts.append(prod.task_logs(home, dag_id, run_id, ti["task_id"]))
    except Exception as exc:  # the API itself may be what broke
        parts.append(f"(task instances unavailable: {exc})\n" + prod.task_logs(home, dag_id, run_id))
    return "\n".join(parts)


def _run_dag(stack: prod.Stack, api: prod.AirflowApi, dag_id: str, conf: dict, timeout_s: float) -> tuple:
    started = time.monotonic()
    run_id = api.trigger_and_unpause(dag_id, conf)
    logical_date = api.run(dag_id, run_id)["logical_date"]
    print(f"[production] triggered {dag_id} run {run_id} (logical date {logical_date}) via REST", flush=True)
    try:
        run = prod.wait_for_run(stack, api, dag_id, run_id, timeout_s)
    except BaseException:
        print(f"\n[production] {dag_id} did not finish:\n" + _explain(stack, api, dag_id, run_id), flush=True)
        raise
    print(f"[production] {dag_id} {run['state']} in {time.monotonic() - started:.0f}s", flush=True)
    if run["state"] != "success":
        print(f"\n[production] {dag_id} {run['state']}:\n" + _explain(stack, api, dag_id, run_id), flush=True)
    return run_id, run, {t["task_id"]: t for t in api.task_instances(dag_id, run_id)}


def test_landing_scan_runs_on_the_celery_worker(stack) -> None:
    """The wiring on its own: a run through the REST API, queued in Redis, run by the Celery worker,
    reported to the api-server's Execution API, recorded in PostgreSQL (the landing folder is empty)."""
    st, api = stack
    with st.report_on_failure("test_landing_scan_runs_on_the_celery_worker"):
        run_id, run, tis = _run_dag(st, api, "garment_landing_scan", {}, LANDING_SCAN_TIMEOUT_S)
        assert run["state"] == "success", f"garment_landing_scan ended {run['state']}"
        scan = tis["find_new_batches"]
        assert scan["state"] == "success" and scan["queue"] == "default" and scan["hostname"], scan
        assert api.xcom("garment_landing_scan", run_id, "find_new_batches") == []


def test_retrain_promotes_a_champion_into_the_postgres_registry(stack) -> None:
    """garment_retrain end to end on the Celery worker (training on the `gpu` queue), and the champion in
    the MLflow server's PostgreSQL registry, seen through the server and through the CLI."""
    st, api = stack
    with st.report_on_failure("test_retrain_promotes_a_champion_into_the_postgres_registry"):
        run_id, run, tis = _run_dag(st, api, "garment_retrain", {"profile": "demo"}, RETRAIN_TIMEOUT_S)
        assert run["state"] == "success", f"garment_retrain ended {run['state']}: " + json.dumps(
            {t: ti["state"] for t, ti in tis.items()}
        )
        succeeded = {t for t, ti in tis.items() if ti["state"] == "success"}
        assert succeeded == set(RETRAIN_PROMOTE_PATH)
        assert tis["stop"]["state"] == "skipped" and tis["rollback"]["state"] == "skipped"
        canary = api.xcom("garment_retrain", run_id, "serving_check")
        assert (
            canary["passed"]
            and canary["model_version"] == api.xcom("garment_retrain", run_id, "promote")["version"]
        )
        runs = [r["dag_run_id"] for r in api.runs("garment_retrain")]
        assert runs == [run_id], (
            f"one retrain, the triggered one (unpausing must not add a scheduled run): {runs}"
        )
        assert tis["train"]["queue"] == "gpu", "training must go to the gpu queue under placement celery"
        assert all(tis[t]["hostname"] for t in RETRAIN_PROMOTE_PATH), "every task ran on a Celery worker"

        gate = api.xcom("garment_retrain", run_id, "gate")
        assert gate["verdict"] == "pass" and gate["mode"] == "bootstrap", gate
        promotion = api.xcom("garment_retrain", run_id, "promote")
        smoke = api.xcom("garment_retrain", run_id, "smoke_test")
        assert smoke["passed"] and smoke["model_version"] == promotion["version"], smoke

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=st.mlflow_url, registry_uri=st.mlflow_url)
        champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
        assert str(champion.version) == str(promotion["version"])
        assert champion.tags.get("gate.verdict") == "pass", champion.tags
        assert champion.run_id, "the champion has no training run"
        train_run = client.get_run(champion.run_id)
        assert train_run.data.tags.get("data_version") == gate["data_version"]
        assert "test_dice_median" in train_run.data.metrics
        # the registry is the server's PostgreSQL database: the alias is a row there
        import psycopg2

        with psycopg2.connect(st.databases["mlflow"]) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                (MODEL_NAME,),
            )
            assert cur.fetchall() == [(int(promotion["version"]),)]
        # the model's files went through the server's proxied artifact store into its destination folder
        assert any((st.workdir / "mlflow-artifacts").rglob("MLmodel")), (
            "no model under --artifacts-destination"
        )

        shown = subprocess.run(
            prod.garmentseg_cli("registry", "show", "--json"),
            cwd=st.project,
            env=st.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 0, shown.stderr[-2000:]
        state = json.loads(shown.stdout)
        assert state["tracking_uri"] == st.mlflow_url
        assert state["champion"]["version"] == str(promotion["version"])
        assert [m["to_version"] for m in state["promotions"]] == [str(promotion["version"])]

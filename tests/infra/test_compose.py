"""The docker-compose stack: health checks, dependency conditions, GPU worker queue, mode switches, secrets from required variables. Static: no engine, cluster or Docker here."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from garmentseg.config import Config
from tests.infra.infra_files import (
    COMPOSE,
    ENV_EXAMPLE,
    MODE_VARIABLES,
    NAMING_KEY,
    PLACEHOLDER,
    SECRET_KEY,
    URL_CREDENTIALS,
    command,
    compose,
    compose_services,
    depends_on,
    environment_values,
    queues,
    secret_findings,
    variable_default,
)


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in compose_services().items():
        if service.get("restart") == "no":
            assert command(service), f"one-shot {name} runs nothing"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_depends_on_targets_exist_and_conditions_fit_them() -> None:
    services = compose_services()
    one_shots = {n for n, s in services.items() if s.get("restart") == "no"}
    awaited = set()
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services and target != name, f"{name} depends on unknown service {target}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in one_shots, f"{name} waits for {target} to finish, but it runs forever"
                awaited.add(target)
    assert awaited == one_shots, f"one-shot services nothing waits for: {one_shots - awaited}"


def test_gpu_worker_reserves_a_gpu_and_serves_the_params_queue(cfg: Config) -> None:
    gpu_workers = [s for s in compose_services().values() if cfg.airflow.gpu_queue in queues(s)]
    (worker,) = gpu_workers
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert variable_default(worker["image"], "GARMENTSEG_GPU_IMAGE") == cfg.airflow.kubernetes.image
    assert worker["build"]["args"]["VARIANT"] == "gpu"
    cpu_worker = compose_services()["airflow-worker"]
    assert "deploy" not in cpu_worker and queues(cpu_worker) == ["${AIRFLOW_CPU_WORKER_QUEUES:-default}"]


def test_airflow_init_migrates_and_creates_the_dvc_pool(cfg: Config) -> None:
    script = " ".join(command(compose_services()["airflow-init"]))
    assert "airflow db migrate" in script
    assert re.search(rf"airflow pools set {cfg.airflow.dvc_pool} 1 ", script)


def test_compose_mode_switches_and_service_urls() -> None:
    services = compose_services()
    for name in ("airflow-scheduler", "airflow-worker", "airflow-worker-gpu", "airflow-apiserver"):
        env = services[name]["environment"]
        missing = [v for v in MODE_VARIABLES if v not in env]
        assert not missing, f"{name} lacks {missing}"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        for variable, service in (
            ("MLFLOW_TRACKING_URI", "mlflow"),
            ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "airflow-apiserver"),
        ):
            url = urlsplit(env[variable])
            assert url.hostname == service and f"--port {url.port}" in " ".join(command(services[service]))
    mlflow = services["mlflow"]
    assert "--serve-artifacts" in " ".join(command(mlflow))
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert urlsplit(mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"


def with_defaults(text: str) -> str:
    """text with every ${VAR:-default} replaced by its default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_tasks_note_dag_runs_through_the_api_server_as_an_account_that_may(cfg: Config) -> None:
    """The drift note needs airflow.api_url and an account whose role may edit DAG runs (user, op, admin),
    registered by airflow-init with the password the tasks hold."""
    services = compose_services()
    init_script = " ".join(command(services["airflow-init"]))
    assert "garmentseg airflow api-account" in init_script
    for name in ("airflow-worker", "airflow-worker-gpu", "airflow-scheduler"):
        env = services[name]["environment"]
        api = urlsplit(env["GARMENTSEG__AIRFLOW__API_URL"])
        assert api.hostname == "airflow-apiserver"
        assert f"--port {api.port}" in " ".join(command(services["airflow-apiserver"]))
        user = with_defaults(env[cfg.airflow.api_user_env])
        password = env[cfg.airflow.api_password_env]
        assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?\}", password), "the API password is a required secret"
        users = with_defaults(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]).split(",")
        roles = dict(entry.split(":") for entry in users)
        assert roles.get(user) in ("user", "op", "admin"), f"{user} is not an Airflow user that may edit runs"


def test_compose_secrets_come_from_required_variables_documented_in_env_example() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?[^}]*\}", json.dumps(compose())))
    for service, key, value in environment_values():
        url = URL_CREDENTIALS.search(value)
        if url:
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?\}", url.group("password")), (
                f"{service}.{key}: URL password"
            )
        elif SECRET_KEY.search(key) and not NAMING_KEY.search(key):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?\}", value), (
                f"{service}.{key} must be a required ${{VAR:?}}"
            )
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example), f"required but not in .env.example: {required - set(example)}"
    secrets = {k for k in example if SECRET_KEY.search(k) or k.startswith(("MINIO_ROOT_", "S3_"))}
    assert secrets and all(example[k] == PLACEHOLDER for k in secrets), "only placeholders in .env.example"
    assert secrets <= required, f"secrets compose does not require: {secrets - required}"
    assert not secret_findings(COMPOSE)


def test_mlflow_runs_basic_auth_and_each_client_has_its_own_account() -> None:
    """Who may move `champion`: people and the Bento read, the pipeline manages, the admin only bootstraps."""
    services = compose_services()
    mlflow = services["mlflow"]
    script = " ".join(command(mlflow))
    assert "mlflow server --app-name basic-auth" in script
    assert "default_permission = READ" in script and '"$$MLFLOW_AUTH_CONFIG_PATH"' in script
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "${MLFLOW_ADMIN_PASSWORD:?}"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "${MLFLOW_FLASK_SECRET_KEY:?}"

    def account(service: str) -> str:
        return services[service]["environment"]["MLFLOW_TRACKING_PASSWORD"]

    init = services["mlflow-auth-init"]
    assert command(init) == ["garmentseg", "registry", "bootstrap-auth"]
    assert depends_on(init) == {"mlflow": "service_healthy"}
    assert account("mlflow-auth-init") == "${MLFLOW_ADMIN_PASSWORD:?}"
    assert init["environment"]["MLFLOW_PIPELINE_PASSWORD"] == "${MLFLOW_PIPELINE_PASSWORD:?}"
    assert init["environment"]["MLFLOW_READER_PASSWORD"] == "${MLFLOW_READER_PASSWORD:?}"
    clients = [n for n, s in services.items() if "MLFLOW_TRACKING_URI" in s.get("environment", {})]
    for name in clients:
        expected = {"mlflow-auth-init": "ADMIN", "bento": "READER"}.get(name, "PIPELINE")
        assert account(name) == f"${{MLFLOW_{expected}_PASSWORD:?}}", name
        if name not in ("mlflow-auth-init", "airflow-init"):  # airflow-init migrates Airflow's DB only
            assert depends_on(services[name]).get("mlflow-auth-init") == "service_completed_successfully", (
                name
            )
    assert {"bento", "airflow-worker", "airflow-worker-gpu", "airflow-scheduler"} <= set(clients)

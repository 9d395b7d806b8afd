"""Who may move `champion`, for real: `mlflow server --app-name basic-auth` (SQLite backend and auth DB in a
tmp dir) bootstrapped by `garmentseg registry bootstrap-auth`; the pipeline account registers and moves
aliases, a reader (people) account and an unauthenticated client are refused an alias change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from garmentseg import access, registry
from garmentseg.config import Config, load_config
from garmentseg.deploy import free_port, stop_service

pytestmark = pytest.mark.slow(minutes=3)  # a basic-auth MLflow server of its own
ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "garmentseg-unet-auth-test"
# throwaway credentials of a server that lives for this module only
ADMIN = access.Account("admin", "admin-pw-5d1e")  # pragma: allowlist secret
PIPELINE = access.Account("pipeline", "pipeline-pw-77c2")  # pragma: allowlist secret
PERSON = access.Account("person", "person-pw-0b9f")  # pragma: allowlist secret
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{auth_db}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The tracking server with MLflow's basic-auth app on a free port; stopped on every way out."""
    tmp = tmp_path_factory.mktemp("mlflow_auth")
    (tmp / "basic_auth.ini").write_text(AUTH_INI.format(auth_db=tmp / "auth.db"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-test-only",  # pragma: allowlist secret
    }
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}"),
        *("--serve-artifacts", "--artifacts-destination", str(tmp / "artifacts")),
    ]
    log = tmp / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=sink, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, tmp
    finally:
        stop_service(proc)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {timeout_s}s: {log.read_text()[-3000:]}")


def _as(monkeypatch: pytest.MonkeyPatch, account: access.Account | None) -> None:
    """Make this process's MLflow client speak as `account` (None: no credentials at all)."""
    for name in (access.USERNAME_ENV, access.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    if account is not None:
        monkeypatch.setenv(access.USERNAME_ENV, account.username)
        monkeypatch.setenv(access.PASSWORD_ENV, account.password)


def _cfg(url: str) -> Config:
    return load_config(
        "demo", ROOT / "params.yaml", overrides={"registry": {"tracking_uri": url, "model_name": MODEL_NAME}}
    )


def _new_version(cfg: Config, tmp: Path) -> str:
    """A run with a file logged through the server's proxied artifacts, registered as a new version."""
    import mlflow

    from garmentseg.training import ensure_experiment

    weights = tmp / "weights.txt"
    weights.write_text("tiny")
    with mlflow.start_run(experiment_id=ensure_experiment(cfg)) as run:
        mlflow.log_artifact(str(weights), "model")
    client = registry.mlflow_client(cfg)
    return str(
        client.create_model_version(MODEL_NAME, f"{run.info.artifact_uri}/model", run.info.run_id).version
    )


def test_only_the_pipeline_account_moves_champion(server, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    url, tmp = server
    cfg = _cfg(url)
    bootstrap_env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": url,
        "GARMENTSEG__REGISTRY__MODEL_NAME": MODEL_NAME,
        access.USERNAME_ENV: ADMIN.username,
        access.PASSWORD_ENV: ADMIN.password,
        access.PIPELINE_ENV[0]: PIPELINE.username,
        access.PIPELINE_ENV[1]: PIPELINE.password,
        access.READER_ENV[0]: PERSON.username,
        access.READER_ENV[1]: PERSON.password,
    }
    cli = [sys.executable, "-m", "garmentseg.cli", "registry", "bootstrap-auth", "--profile", "demo"]
    for attempt in range(2):  # the second run finds everything in place: idempotent
        done = subprocess.run(cli, env=bootstrap_env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["pipeline"] == PIPELINE.username and report["permission"] == "MANAGE"
        assert set(report["users"].values()) == {"created" if attempt == 0 else "password set"}
        assert set(report["grants"].values()) == {"granted" if attempt == 0 else "kept"}

    _as(monkeypatch, PIPELINE)
    first, second = _new_version(cfg, tmp), _new_version(cfg, tmp)
    client = registry.mlflow_client(cfg)
    client.set_registered_model_alias(MODEL_NAME, registry.CHAMPION, first)

    refusals = {}
    for who, account in (("nobody", None), ("person", PERSON)):
        _as(monkeypatch, account)
        with pytest.raises(MlflowException) as refused:
            registry.mlflow_client(cfg).set_registered_model_alias(MODEL_NAME, registry.CHAMPION, second)
        refusals[who] = refused.value.get_http_status_code()
    assert refusals == {"nobody": 401, "person": 403}, refusals
    # the person reads (default_permission READ): the champion did not move
    assert (
        str(registry.mlflow_client(cfg).get_model_version_by_alias(MODEL_NAME, "champion").version) == first
    )

    _as(monkeypatch, PIPELINE)
    client.set_registered_model_alias(MODEL_NAME, registry.CHAMPION, second)
    # a rollback restores a version that passed the gate (or was champion by a logged move)
    passed = json.dumps({"verdict": "pass", "candidate_version": first, "reason": "auth test"})
    client.set_model_version_tag(MODEL_NAME, first, registry.GATE_PREFIX + "decision", passed)
    move = registry.rollback(cfg, first, reason="auth test: the pipeline puts v1 back")
    assert (move["from_version"], move["to_version"]) == (second, first)
    assert registry.promotion_log(cfg)[-1]["action"] == "rollback"
    _as(monkeypatch, PERSON)
    assert (
        str(registry.mlflow_client(cfg).get_model_version_by_alias(MODEL_NAME, "champion").version) == first
    )
    with pytest.raises(MlflowException) as refused:
        registry.rollback(cfg, second, reason="a person may not")
    assert refused.value.get_http_status_code() == 403

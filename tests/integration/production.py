"""Production mode as separate processes: the harness behind test_multi_node.py.

`Stack` starts each process in its own process group and node directory, as its node's user, output in its
own log file (127.0.0.1 and free ports only): here Airflow with the CeleryExecutor on a throwaway PostgreSQL
database and a Redis database of its own (the api-server with the REST and Execution APIs, the scheduler,
the dag-processor and Celery workers per queue; `nodes.py` adds the other nodes and shared services).
`Stack.stop()` ends all of it (SIGTERM to each process group, SIGKILL after a grace period), plus anything a
task started in a session of its own (the Bento services of the serving check and smoke test): every process
carries a per-stack marker in its environment and leftovers with that marker are ended by pid.

The environment is the production column of infra/README.md ("Without Docker"); `Stack.env` is what the
scheduler node's processes got, for the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from garmentseg.deploy import free_port
from garmentseg.orchestration.embedded import EmbeddedAirflow, airflow_command, console_script

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REDIS_HOST = os.environ.get("GARMENTSEG_TEST_REDIS_HOST", HOST)
REDIS_PORT = int(os.environ.get("GARMENTSEG_TEST_REDIS_PORT", "6379"))
# Redis databases this test may claim (one per run); it flushes only the one it claimed.
REDIS_DBS = range(15, 7, -1)
MARKER_ENV = "GARMENTSEG_PRODUCTION_STACK"
TERMINAL_RUN_STATES = {"success", "failed"}


# ------------------------------------------------------------------------------------------------- Redis
@contextlib.contextmanager
def redis_database(host: str = REDIS_HOST, port: int = REDIS_PORT) -> Iterator[str]:
    """Claim an empty Redis database (atomically, by a claim key), yield its URL, FLUSHDB only it afterwards.

    Skips loudly when Redis is unreachable; fails when every candidate database is in use."""
    import redis

    try:
        redis.Redis(host=host, port=port, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(f"PRODUCTION-MODE TEST SKIPPED: Redis is not reachable at {host}:{port} ({exc})")
    claim = f"garmentseg:production-test:{uuid.uuid4().hex}"
    for db in REDIS_DBS:
        client = redis.Redis(host=host, port=port, db=db, socket_connect_timeout=3)
        if client.dbsize() != 0:
            continue
        # Claim it with a key only this run knows; anyone else doing the same sees a non-empty database.
        if not client.set("garmentseg:production-test:claim", claim, nx=True, ex=3600):
            continue
        if client.dbsize() != 1:  # somebody else started using it at the same moment: leave it to them
            client.delete("garmentseg:production-test:claim")
            continue
        try:
            yield f"redis://{host}:{port}/{db}"
        finally:
            if client.get("garmentseg:production-test:claim") == claim.encode():
                client.flushdb()
            client.close()
        return
    raise RuntimeError(f"no empty Redis database among {list(REDIS_DBS)} at {host}:{port}")


# ---------------------------------------------------------------------------------------------- processes
class Fatal(RuntimeError):
    """Raised by a wait_for probe when waiting longer cannot help (e.g. DAG import errors)."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40, skip: tuple[str, ...] = ("[http.access]",)) -> str:
        """The last lines of the log, without the api-server's access log (the test's own polling)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join([line for line in text if not any(s in line for s in skip)][-lines:])


def _pids_with_marker(marker: str) -> list[int]:
    """Processes of this user whose environment carries MARKER_ENV=marker (children in their own sessions)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class Stack:
    """The processes of one production-mode platform, and what a test needs to talk to them."""

    workdir: Path
    project: Path
    env: dict[str, str] = field(repr=False)
    logs: Path
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    procs: list[Proc] = field(default_factory=list)
    airflow_url: str = ""
    mlflow_url: str = ""
    admin_password: str = field(default="", repr=False)
    databases: dict[str, str] = field(default_factory=dict)

    def start(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: Any = None,
    ) -> Proc:
        """Start a long-running process of the stack, in `cwd` (default: the project), as `user` (an
        object with uid and gid; default: this process's user)."""
        log = self.logs / f"{name}.log"
        sink = open(log, "ab")  # noqa: SIM115 (the child holds it; closed here once it is started)
        as_user = {"user": user.uid, "group": user.gid, "extra_groups": []} if user is not None else {}
        try:
            popen = subprocess.Popen(
                cmd,
                cwd=cwd or self.project,
                env={**(env or self.env), MARKER_ENV: self.marker},
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **as_user,
            )
        finally:
            sink.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def run(
        self, name: str, cmd: list[str], timeout_s: float, cwd: Path | None = None, **extra_env: str
    ) -> str:
        """A one-off command (migrate, pools, data) with the stack's environment; its output is logged."""
        log = self.logs / f"{name}.log"
        started = time.monotonic()
        out = subprocess.run(
            cmd,
            cwd=cwd or self.project,
            env={**self.env, **extra_env, MARKER_ENV: self.marker},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        log.write_text(out.stdout)
        if out.returncode != 0:
            raise RuntimeError(f"{name}: {' '.join(cmd[:5])} exited {out.returncode}:\n{out.stdout[-3000:]}")
        print(f"[production] {name}: {time.monotonic() - started:.0f}s", flush=True)
        return out.stdout

    def check_alive(self) -> None:
        dead = [p for p in self.procs if not p.alive()]
        if dead:
            raise RuntimeError(
                "process(es) exited: "
                + "; ".join(f"{p.name} (exit {p.popen.returncode})" for p in dead)
                + "\n"
                + "\n".join(f"--- {p.name} ---\n{p.tail(60)}" for p in dead)
            )

    def wait_for(self, what: str, probe: Callable[[], Any], timeout_s: float, interval_s: float = 1.0) -> Any:
        """Poll `probe` until it returns something truthy; fail early when a stack process dies."""
        deadline = time.monotonic() + timeout_s
        started = time.monotonic()
        last: object = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                result = probe()
                if result:
                    print(f"[production] {what}: {time.monotonic() - started:.0f}s", flush=True)
                    return result
                last = result
            except Fatal:
                raise
            except Exception as exc:  # still starting
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(interval_s)
        raise TimeoutError(f"{what}: not after {timeout_s:.0f}s (last: {last})")

    def report(self, lines: int = 40) -> str:
        """The last log lines of every process, for a failing test's output."""
        return "\n".join(
            f"----- {p.name} (pid {p.popen.pid}, {'running' if p.alive() else f'exit {p.popen.returncode}'}, "
            f"log {p.log}) -----\n{p.tail(lines)}"
            for p in self.procs
        )

    def stop(self, grace_s: float = 20.0) -> list[str]:
        """SIGTERM every process group (newest first), SIGKILL what is left after grace_s; then anything
        else carrying this stack's marker (started in a session of its own by a task). Returns notes."""
        notes = []
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_group_alive(p.popen.pid) for p in self.procs):
            for proc in self.procs:
                proc.popen.poll()  # reap the leaders we own
            time.sleep(0.2)
        for proc in self.procs:
            if _group_alive(proc.popen.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                notes.append(f"{proc.name}: process group still there {grace_s:.0f}s after SIGTERM, killed")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)
        leftovers = _pids_with_marker(self.marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        if leftovers:
            time.sleep(3)
            for pid in _pids_with_marker(self.marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            notes.append(f"ended {len(leftovers)} leftover process(es) by pid: {leftovers}")
        return notes

    @contextlib.contextmanager
    def report_on_failure(self, what: str) -> Iterator[None]:
        """Print every process's last log lines when the block fails (an assertion included), re-raise."""
        try:
            yield
        except BaseException:
            print(
                f"\n[production] {what} failed; the processes' last log lines:\n{self.report(40)}", flush=True
            )
            raise


def _group_alive(pgid: int) -> bool:
    """Whether any process (zombies aside) is still in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                    return True
    return False


# ------------------------------------------------------------------------------------------- environment
def sqlalchemy_url(pg_uri: str, driver: str = "postgresql+psycopg2") -> str:
    """postgresql://user@host:port/db -> <driver>://user@host:port/db"""
    return driver + pg_uri[len("postgresql") :]


def base_env(**settings: str) -> dict[str, str]:
    """os.environ without anything Airflow/MLflow/garmentseg another fixture may have exported, plus settings."""
    drop = ("AIRFLOW", "MLFLOW_", "GARMENTSEG", "BENTOML_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(settings)
    return env


def airflow_settings(
    embedded: EmbeddedAirflow,
    *,
    metadata_uri: str,
    broker_url: str,
    api_port: int,
    passwords_file: Path,
) -> dict[str, str]:
    """The production column of infra/README.md for one host, on top of the embedded Airflow's settings
    (home, the project's DAGs and params): CeleryExecutor, PostgreSQL, Redis, one API server."""
    from cryptography.fernet import Fernet

    return {
        **embedded.settings(),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(metadata_uri),
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": sqlalchemy_url(metadata_uri, "db+postgresql"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://{HOST}:{api_port}",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        # SimpleAuthManager with one admin whose password this harness writes: the REST API needs a JWT
        # from POST /auth/token, as it would in production (no all-admins shortcut).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        # two busy cores: one parser, quick pickup of the DAG files and of queued work
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


# --------------------------------------------------------------------------------------- the REST client
@dataclass
class AirflowApi:
    """Airflow 3's public REST API (v2) with a JWT from the SimpleAuthManager's /auth/token."""

    url: str
    username: str
    password: str = field(repr=False)
    _token: str | None = field(default=None, repr=False)

    def _headers(self) -> dict[str, str]:
        import httpx

        if self._token is None:
            resp = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        resp = httpx.request(method, f"{self.url}{path}", headers=self._headers(), timeout=30, **kwargs)
        if resp.status_code == 401:  # token expired: once more with a fresh one
            self._token = None
            resp = httpx.request(method, f"{self.url}{path}", headers=self._headers(), timeout=30, **kwargs)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def health(self) -> dict[str, Any]:
        import httpx

        return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=10).json()

    def dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}")

    def import_errors(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v2/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def trigger_and_unpause(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run for the DAG's pending schedule slot, then unpause it.

        Both DAGs have a schedule and `catchup=False`, so unpausing alone makes the scheduler create the run
        of the latest slot at once. Triggering with that slot's logical date first makes our run that run
        (the scheduler sees it exists and moves on), so exactly one run happens, the one the test watches.
        """
        slot = self.dag(dag_id).get("next_dagrun_logical_date")
        run_id = self.trigger(dag_id, conf, logical_date=slot)
        self.unpause(dag_id)
        return run_id

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.request("GET", path, params={"deserialize": True})["value"]


def task_logs(home: Path, dag_id: str, run_id: str, task_id: str | None = None, lines: int = 60) -> str:
    """The tails of task log files under AIRFLOW_HOME/logs (the worker writes them on this host)."""
    root = home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    files = sorted(root.glob(f"task_id={task_id or '*'}/**/attempt=*.log"))
    out = []
    for f in files:
        text = f.read_text(errors="replace").splitlines()
        rendered = []
        for line in text[-lines:]:
            try:
                event = json.loads(line)
                rendered.append(
                    f"{event.get('timestamp', '')} {event.get('level', '')} {event.get('event', '')}"
                    + (f"\n{_render_error(event['error_detail'])}" if event.get("error_detail") else "")
                )
            except (ValueError, AttributeError):
                rendered.append(line)
        out.append(f"--- {f.relative_to(root)} ---\n" + "\n".join(rendered))
    return "\n".join(out) or f"(no task logs under {root})"


def _render_error(detail: Any) -> str:
    """Airflow's structured exception (a list of chained exceptions with frames) as a Python traceback."""
    if not isinstance(detail, list):
        return str(detail)
    out = []
    for exc in detail:
        if not isinstance(exc, dict):
            out.append(str(exc))
            continue
        out.append("Traceback (most recent call last):")
        for frame in exc.get("frames", []):
            out.append(
                f'  File "{frame.get("filename")}", line {frame.get("lineno")}, in {frame.get("name")}'
            )
        out.append(f"{exc.get('exc_type')}: {exc.get('exc_value')}")
    return "\n".join(out)


def wait_for_run(stack: Stack, api: AirflowApi, dag_id: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the run until success or failed (printing task state changes); returns the final run."""
    seen: dict[str, str] = {}
    started = time.monotonic()

    def probe() -> dict[str, Any] | None:
        for ti in api.task_instances(dag_id, run_id):
            key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else "")
            state = ti.get("state") or "none"
            if seen.get(key) != state:
                seen[key] = state
                where = f" on {ti['hostname']}" if ti.get("hostname") else ""
                print(
                    f"[production] {time.monotonic() - started:6.0f}s {dag_id} {key}: {state}"
                    f" (queue {ti.get('queue')}{where})",
                    flush=True,
                )
        run = api.run(dag_id, run_id)
        return run if run["state"] in TERMINAL_RUN_STATES else None

    return stack.wait_for(f"{dag_id} run {run_id}", probe, timeout_s, interval_s=3)


# ------------------------------------------------------------------------------------------- the stack
def _write_passwords(path: Path, password: str) -> None:
    path.write_text(json.dumps({"admin": password}))
    path.chmod(0o600)


def start_scheduler_node(
    stack: Stack,
    *,
    airflow_db: str,
    broker_url: str,
    queues: str = "default",
    startup_timeout_s: float = 300,
) -> AirflowApi:
    """Migrate, then start the api-server, scheduler, dag-processor and a Celery worker for `queues` in the
    scheduler's node (stack.project); wait until the API is healthy, the scheduler and dag-processor
    heartbeat and the worker is ready. The caller has put the project's settings (GARMENTSEG_*, MLflow)
    in stack.env already."""
    home = stack.workdir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedAirflow(home, stack.project / "dags", stack.project / "params.yaml")
    api_port = free_port()
    stack.admin_password = secrets.token_hex(16)
    passwords = home / "simple_auth_manager_passwords.json"
    _write_passwords(passwords, stack.admin_password)
    stack.databases.update(airflow=airflow_db)
    stack.airflow_url = f"http://{HOST}:{api_port}"
    stack.env.update(
        airflow_settings(
            embedded,
            metadata_uri=airflow_db,
            broker_url=broker_url,
            api_port=api_port,
            passwords_file=passwords,
        )
    )
    started = time.monotonic()
    embedded.prepare("dvc", stack.logs, env={**stack.env, MARKER_ENV: stack.marker})
    print(f"[production] airflow db migrate and pools: {time.monotonic() - started:.0f}s", flush=True)
    stack.start("airflow-api-server", airflow_command("api-server", "--host", HOST, "--port", str(api_port)))
    stack.start("airflow-scheduler", airflow_command("scheduler"))
    stack.start("airflow-dag-processor", airflow_command("dag-processor"))
    worker = start_worker(stack, "airflow-celery-worker", queues, stack.env)
    api = AirflowApi(stack.airflow_url, "admin", stack.admin_password)

    def healthy() -> bool:
        h = api.health()
        return all(
            h.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")
        )

    stack.wait_for("Airflow api-server, scheduler and dag-processor healthy", healthy, startup_timeout_s, 2)
    wait_worker_ready(stack, worker, startup_timeout_s)
    return api


def start_worker(
    stack: Stack,
    name: str,
    queues: str,
    env: dict[str, str],
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    user: Any = None,
) -> Proc:
    """A Celery worker for `queues` (comma-separated) with `env`, started by `python` in `cwd` as `user`."""
    return stack.start(
        name,
        [
            *(str(python), "-m", "airflow", "celery", "worker", "--queues", queues, "--concurrency", "2"),
            *("--skip-serve-logs", "--without-mingle", "--without-gossip"),
        ],
        env=env,
        cwd=cwd,
        user=user,
    )


def wait_worker_ready(stack: Stack, worker: Proc, timeout_s: float) -> None:
    stack.wait_for(f"{worker.name} ready", lambda: " ready." in worker.tail(200), timeout_s, 2)


def worker_settings(stack: Stack, home: Path, project: Path) -> dict[str, str]:
    """The Airflow settings of a worker on another node: the cluster's (database, broker, API, secrets, as
    a deployment's shared secret gives them) with its own home, DAG folder and params.yaml, and nothing that
    names a file on the scheduler's node."""
    own = EmbeddedAirflow(home, project / "dags", project / "params.yaml").settings()
    local = {
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    }
    cluster = {k: v for k, v in stack.env.items() if k.startswith("AIRFLOW__") and k not in local}
    return {**own, **cluster}


def garmentseg_cli(*args: str) -> list[str]:
    return [console_script("garmentseg"), *args]

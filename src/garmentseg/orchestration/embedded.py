"""Embedded Airflow: one local AIRFLOW_HOME (SQLite metadata DB), the project's DAGs and params.yaml.

The demo, the integration tests and the production-mode harness all start Airflow from these settings, so
an embedded Airflow is configured in one place. Airflow runs as `python -m airflow` of this interpreter's
environment (the project's locked venv); nothing here imports Airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garmentseg.config import PARAMS_ENV, PROJECT_PARAMS, Config

# What every embedded process gets besides the Airflow settings: no analytics calls, quiet TensorFlow.
QUIET_ENV = {"GX_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2"}


class CommandError(RuntimeError):
    """A command exited non-zero; the message names it, its exit code, its log file and its last lines."""


def console_script(name: str) -> str:
    """The absolute path of a console script of this environment (works as printed, uv on PATH or not)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def scripts_on_path(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with this environment's console scripts first on PATH (DVC stages call `garmentseg`)."""
    scripts = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([scripts, env.get("PATH", "")])}


def airflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def run_logged(
    cmd: list[str],
    log_file: Path,
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
) -> str:
    """Run a command, keep its whole output in `log_file`, hand each line to `on_line`; return the output."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with log_file.open("w") as sink:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            lines.append(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    if check and code != 0:
        tail = "".join(lines[-15:])
        raise CommandError(f"{' '.join(cmd[:4])} failed (exit {code}); full log: {log_file}\n{tail}")
    return "".join(lines)


@dataclass(frozen=True)
class EmbeddedAirflow:
    """One local Airflow: its home (metadata DB, logs), the DAGs it loads and the params.yaml they read."""

    home: Path
    dags_folder: Path
    params: Path

    @classmethod
    def for_project(cls, cfg: Config) -> EmbeddedAirflow:
        """<state_dir>/airflow, the project's dags/ (else this checkout's), the project's params.yaml."""
        local = cfg.root / "dags"
        dags = local if local.is_dir() else PROJECT_PARAMS.parent / "dags"
        return cls(cfg.path(cfg.paths.state_dir) / "airflow", dags, cfg.root / "params.yaml")

    def settings(self) -> dict[str, str]:
        """The variables that make `airflow` this instance (also what `airflow standalone` needs)."""
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home}/airflow.db",
            PARAMS_ENV: str(self.params),
        }

    def env(self, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
        """`base` (default os.environ), then the quiet defaults, this instance's settings and `extra`."""
        base = scripts_on_path(os.environ if base is None else base)
        return {**base, **QUIET_ENV, **self.settings(), **extra}

    def prepare(self, pool: str, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        """`airflow db migrate`, then the one-slot pool the DVC tasks queue on (both idempotent)."""
        env = env or self.env()
        self.home.mkdir(parents=True, exist_ok=True)
        run_logged(airflow_command("db", "migrate"), log_dir / "airflow-db-migrate.log", env=env)
        run_logged(
            airflow_command("pools", "set", pool, "1", "DVC locks its repo"),
            log_dir / "airflow-pools.log",
            env=env,
        )

    def dags_test(
        self,
        dag_id: str,
        conf: dict[str, Any],
        log_file: Path,
        *,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> str:
        """One run of the DAG by `airflow dags test` (real Airflow executes every task); its final state."""
        out = run_logged(
            airflow_command("dags", "test", dag_id, "--conf", json.dumps(conf)),
            log_file,
            env=env or self.env(),
            cwd=self.params.parent,
            on_line=on_line,
            check=False,
        )
        finished = [line for line in out.splitlines() if "DagRun Finished" in line]
        return finished[-1].split("state=", 1)[1].split(",")[0] if finished else "unknown"

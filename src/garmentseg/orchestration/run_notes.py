"""A note on an Airflow DAG run, written through Airflow's public REST API.

Airflow 3 tasks reach the metadata DB only through the Execution API, which shows a task its run's note but
cannot change it; the public API can (PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}). A task logs in with the
account whose user and password are in the variables `airflow.api_user_env` / `airflow.api_password_env`
(the auth manager's POST /auth/token) at `airflow.api_url`. The note is appended to what the run already
says, once. A note that cannot be written is reported, not raised: it annotates a run, it must not fail one.

`garmentseg airflow api-account` puts that account into the simple auth manager's passwords file at deploy
time (compose's airflow-init), so the password the tasks hold is the one the API server checks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from garmentseg.cliopts import config_options
from garmentseg.locks import exclusive

if TYPE_CHECKING:
    import httpx

    from garmentseg.config import Config

log = logging.getLogger(__name__)


def note_dag_run(
    cfg: Config, dag_id: str, run_id: str, note: str, *, client: httpx.Client | None = None
) -> str:
    """Append `note` to the DAG run's note; returns "noted", "already noted" or why it was not written."""
    import httpx

    settings = cfg.airflow
    if not settings.api_url and client is None:
        return "not noted: airflow.api_url is not set"
    user, password = os.environ.get(settings.api_user_env), os.environ.get(settings.api_password_env)
    if not user or not password:
        return f"not noted: ${settings.api_user_env} / ${settings.api_password_env} are not set"
    own = client is None
    client = client or httpx.Client(base_url=settings.api_url.rstrip("/"), timeout=30)
    try:
        return _append_note(client, dag_id, run_id, note, user, password)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning("note on %s/%s not written: %s", dag_id, run_id, exc)
        return f"not noted: {exc}"
    finally:
        if own:
            client.close()


def _append_note(client: Any, dag_id: str, run_id: str, note: str, user: str, password: str) -> str:
    login = client.post("/auth/token", json={"username": user, "password": password})
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    url = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    current = client.get(url, headers=headers)
    current.raise_for_status()
    existing = current.json().get("note") or ""
    if note in existing:
        return "already noted"
    combined = f"{existing}\n\n{note}" if existing else note
    client.patch(
        url, params={"update_mask": "note"}, json={"note": combined}, headers=headers
    ).raise_for_status()
    return "noted"


def register_api_account(passwords_file: Path, user: str, password: str) -> None:
    """Set `user`'s password in SimpleAuthManager's passwords file, keeping every other account. The auth
    manager generates passwords only for users missing from the file, and locks the file while it does."""
    passwords_file = Path(passwords_file)
    with exclusive(passwords_file):
        text = passwords_file.read_text()
        passwords = json.loads(text) if text.strip() else {}
        passwords[user] = password
        passwords_file.write_text(json.dumps(passwords) + "\n")


@click.group("airflow")
def airflow_cli() -> None:
    """Airflow deployment helpers."""


@airflow_cli.command("api-account")
@config_options
@click.option(
    "--passwords-file",
    envvar="AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The simple auth manager's passwords file [env AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE].",
)
def api_account_cmd(profile: str | None, params: str | None, passwords_file: Path) -> None:
    """Register the account tasks write DAG-run notes with (its user and password in the variables
    `airflow.api_user_env` / `airflow.api_password_env`); list it in SIMPLE_AUTH_MANAGER_USERS with role user."""
    from garmentseg.config import load_config

    settings = load_config(profile, params).airflow
    missing = [
        name for name in (settings.api_user_env, settings.api_password_env) if not os.environ.get(name)
    ]
    if missing:
        raise click.UsageError(
            f"set {' and '.join('$' + name for name in missing)}: the API account to register"
        )
    user = os.environ[settings.api_user_env]
    register_api_account(passwords_file, user, os.environ[settings.api_password_env])
    click.echo(f"API account {user!r} registered in {passwords_file}")

"""A note on an Airflow DAG run, written through Airflow's public REST API.

Airflow 3 tasks reach the metadata DB only through the Execution API, which shows a task its run's note but
cannot change it; the public API can (PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}). A task logs in with the
account whose user and password are in the variables `airflow.api_user_env` / `airflow.api_password_env`
(the auth manager's POST /auth/token) at `airflow.api_url`. The note is appended to what the run already
says, once. A note that cannot be written is reported, not raised: it annotates a run, it must not fail one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

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

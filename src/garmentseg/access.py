"""Who may move `champion`: the MLflow server's basic-auth users and what each may do to the registry.

The tracking server runs MLflow's own authentication (`mlflow server --app-name basic-auth`) with
`default_permission = READ`, so every authenticated account reads everything and nobody unauthenticated
reads anything. Three kinds of account, each from its own secret:
- the admin (MLflow's `admin_username`), used only by `bootstrap` to create the others and grant;
- the pipeline (Airflow tasks, training pods): MANAGE on the registered model and the experiment, so it
  registers versions and moves aliases. It is not an admin: it cannot create users or grant itself more,
  and a leaked pipeline secret reaches this model and experiment only;
- readers (people, the Bento service): READ by default, so they see runs and load models but an alias
  change is refused with 403. People who need more get it per resource from an admin.

MLflow clients read the account from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from garmentseg.cliopts import config_options

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

# the variables MLflow clients read the account from (names, not values)
USERNAME_ENV, PASSWORD_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)  # pragma: allowlist secret
PIPELINE_ENV = ("MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD")
READER_ENV = ("MLFLOW_READER_USERNAME", "MLFLOW_READER_PASSWORD")
PIPELINE_PERMISSION = "MANAGE"


@dataclass(frozen=True)
class Account:
    """One basic-auth user of the tracking server."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Account({self.username!r})"


def account_from_env(names: tuple[str, str]) -> Account:
    """The account named by a (username variable, password variable) pair; both must be set and non-empty."""
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise click.ClickException(f"{', '.join(missing)} not set: the account comes from a secret")
    return Account(os.environ[names[0]], os.environ[names[1]])


def _ensure_user(auth: Any, account: Account) -> str:
    """Create the user, or set its password to the secret's (a re-run rotates it); returns what happened."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(account.username)
    except MlflowException:
        auth.create_user(account.username, account.password)
        return "created"
    auth.update_user_password(account.username, account.password)
    return "password set"


def _grant(auth: Any, username: str, resource_type: str, resource_id: str) -> str:
    """Give `username` PIPELINE_PERMISSION on one resource unless it resolves to that already; returns
    what happened. A different explicit grant is replaced."""
    from mlflow.exceptions import MlflowException

    if auth.get_user_permission(username, resource_type, resource_id).permission == PIPELINE_PERMISSION:
        return "kept"
    try:
        auth.grant_user_permission(username, resource_type, resource_id, PIPELINE_PERMISSION)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, PIPELINE_PERMISSION)
    return "granted"


def bootstrap(cfg: Config, pipeline: Account, readers: list[Account]) -> dict[str, Any]:
    """With the admin account in the environment: create the pipeline and reader users, the experiment and
    the registered model, and grant the pipeline MANAGE on both. Idempotent: safe to run on every deploy."""
    from mlflow.server import get_app_client

    from garmentseg import registry
    from garmentseg.training import ensure_experiment

    auth = get_app_client("basic-auth", tracking_uri=cfg.tracking_uri)
    users = {account.username: _ensure_user(auth, account) for account in (pipeline, *readers)}
    experiment_id = ensure_experiment(cfg)
    name = cfg.registry.model_name
    registry.ensure_registered_model(registry.mlflow_client(cfg), name)
    grants = {
        "registered_model": _grant(auth, pipeline.username, "registered_model", name),
        "experiment": _grant(auth, pipeline.username, "experiment", experiment_id),
    }
    log.info(
        "pipeline user %s: %s on model %s and experiment %s",
        pipeline.username,
        PIPELINE_PERMISSION,
        name,
        experiment_id,
    )
    return {
        "users": users,
        "pipeline": pipeline.username,
        "model": name,
        "experiment_id": experiment_id,
        "permission": PIPELINE_PERMISSION,
        "grants": grants,
    }


@click.command("bootstrap-auth")
@config_options
def bootstrap_auth_cmd(profile: str | None, params: str | None) -> None:
    """Create the pipeline and reader users on the MLflow server and grant the pipeline MANAGE on the model.

    Run with the admin account in MLFLOW_TRACKING_USERNAME/PASSWORD, the pipeline's in
    MLFLOW_PIPELINE_USERNAME/PASSWORD and the readers' in MLFLOW_READER_USERNAME/PASSWORD."""
    import json

    from garmentseg.config import load_config

    account_from_env((USERNAME_ENV, PASSWORD_ENV))  # the admin: refuse early, by name, when it is missing
    done = bootstrap(
        load_config(profile, params), account_from_env(PIPELINE_ENV), [account_from_env(READER_ENV)]
    )
    click.echo(json.dumps(done, sort_keys=True))

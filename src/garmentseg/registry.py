"""The MLflow Model Registry: register, promote, rollback, show, and the `garmentseg registry` commands.

A retrained model reaches production only through here. As TFX's Evaluator does, the gate re-scores the
candidate *and* the current champion on the same current test split (a champion's historical metric is not
comparable once the split grows). Aliases only (stages are deprecated): `challenger` marks the newest
registered candidate (what the canary serves), `champion` what serves, `previous` the champion before it.
MLflow keeps no history of alias moves, so every move, and every candidate stopped before it, is appended to
a promotion log kept as registered-model tags.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from garmentseg.access import bootstrap_auth_cmd
from garmentseg.cliopts import config_options
from garmentseg.config import load_config

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from garmentseg.config import Config

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
HEADLINE = "dice_median"
MOVE_PREFIX = "promotion_log."
GATE_PREFIX = "gate."
CHECK_PREFIX = "serving_check."


class RegistryError(RuntimeError):
    """A registry operation that must not go ahead; the message says why."""


def mlflow_client(cfg: Config) -> MlflowClient:
    """The tracking and registry client of cfg's MLflow (the process's default URI set to it too)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(cfg.tracking_uri)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)


def migrate_tracking_store(cfg: Config) -> None:
    """Create or upgrade the tracking store's schema now, in this one process.

    MLflow migrates a SQLite store on the first touch, and processes that touch a fresh one together collide
    mid-migration (duplicate columns, a missing alembic_version row): the demo's two Bento servers poll the
    registry from the moment they start. A no-op on a store already at head (a server migrates its own).
    """
    mlflow_client(cfg).search_experiments(max_results=1)


def _actor() -> str:
    return os.environ.get("GARMENTSEG_ACTOR") or os.environ.get("AIRFLOW_CTX_DAG_OWNER") or getpass.getuser()


# What MLflow answers for a model or alias that is not there; anything else (an unreachable server, a
# broken store) is an error, never read as "no champion".
ABSENT = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ABSENT:
            return None
        raise


def canonical_version(version: str | int) -> str:
    """A model version as the registry writes it ("01" and " 1" are "1"); RegistryError for anything else."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise RegistryError(f"{version!r}: a model version is a whole number from 1")
    return str(int(text))


def stale_decision(decision: dict[str, Any], baseline: str | None, cfg: Config) -> str | None:
    """Why a recorded gate decision no longer holds, or None: it compared against another champion than
    the one now in place, or under another floor or slice tolerance."""
    if decision.get("champion_version") != baseline:
        then = f"v{decision['champion_version']}" if decision.get("champion_version") else "no champion"
        now = f"v{baseline}" if baseline else "none"
        return f"it was decided against {then}, the champion is now {now}"
    for key, value in (("floor", cfg.registry.dice_floor), ("slice_tolerance", cfg.registry.slice_tolerance)):
        if decision.get(key) != value:
            return f"it was decided under {key} {decision.get(key)}, the {key} is now {value}"
    return None


def gate_baseline(client: MlflowClient, name: str, version: str) -> ModelVersion | None:
    """What the candidate is compared with: the champion, or `previous` when the candidate is the champion."""
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        return alias_version(client, name, PREVIOUS)
    return champion


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model when it does not exist yet (register and the auth bootstrap need it)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Garment/background U-Net; aliases champion, challenger, previous."
        )


def register(run_id: str, cfg: Config, *, artifact_path: str = "model") -> ModelVersion:
    """A trained run's model becomes a new registered version tagged with its lineage; alias `challenger`.

    Idempotent: a run already registered returns its existing version (a retried task never registers twice).
    """
    client = mlflow_client(cfg)
    name = cfg.registry.model_name
    ensure_registered_model(client, name)
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        log.info("run %s is already %s version %s", run_id, name, version.version)
    else:
        run = client.get_run(run_id)
        lineage = {
            "run_id": run_id,
            # the commit the run was trained from; the registering host's checkout says nothing about it
            "git_commit": run.data.tags.get("git_commit", "unknown"),
            "data_version": run.data.tags.get("data_version", "unknown"),
            "dataset_digest": _dataset_digest(run),
            "data_state": run.data.tags.get("data_state", "unknown"),
            **{k: v for k, v in run.data.tags.items() if k.startswith("data_md5.")},  # DVC hash of each path
            # a pretrained encoder's weights: package, licence, sha256 (training.encoder_tags)
            **{k: v for k, v in run.data.tags.items() if k == "encoder" or k.startswith("encoder.")},
            "profile": run.data.tags.get("profile", run.data.params.get("profile", cfg.profile)),
            "threshold": str(run.data.metrics.get("threshold", run.data.params.get("threshold", "unknown"))),
        }
        lineage.update(
            {f"metric.{k}": f"{v:.6f}" for k, v in run.data.metrics.items() if k.startswith("test_")}
        )
        logged = _logged_model(client, run, artifact_path)
        source = f"models:/{logged.model_id}"
        version = client.create_model_version(
            name, source, run_id=run_id, tags=lineage, model_id=logged.model_id
        )
        _wait_ready(client, name, version.version)
        log.info("registered %s version %s from %s", name, version.version, source)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return client.get_model_version(name, version.version)


def _dataset_digest(run: Any) -> str:
    """Digest of the dataset the run logged with mlflow.log_input (its mlflow.data lineage)."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return inputs[0].dataset.digest if inputs else run.data.tags.get("dataset_digest", "unknown")


def _logged_model(client: MlflowClient, run: Any, artifact_path: str) -> Any:
    """The MLflow 3 logged model (`models:/m-...`) that a training run produced under `artifact_path`."""
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    named = [m for m in found if m.name == artifact_path] or list(found)
    if not named:
        raise RegistryError(f"run {run.info.run_id} logged no model named {artifact_path!r}")
    return max(named, key=lambda m: m.creation_timestamp)


def _wait_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise RegistryError(f"{name} version {version}: registration failed")
        time.sleep(0.5)
    raise RegistryError(f"{name} version {version}: not READY after {timeout_s:.0f}s")


def _append_move(client: MlflowClient, name: str, move: dict[str, Any]) -> None:
    """One tag per move (`promotion_log.000001`...): ordered, append-only, survives restarts."""
    tags = client.get_registered_model(name).tags
    index = 1 + max((int(k[len(MOVE_PREFIX) :]) for k in tags if k.startswith(MOVE_PREFIX)), default=0)
    client.set_registered_model_tag(name, f"{MOVE_PREFIX}{index:06d}", json.dumps(move, sort_keys=True))


def promotion_log(cfg: Config) -> list[dict[str, Any]]:
    client = mlflow_client(cfg)
    tags = client.get_registered_model(cfg.registry.model_name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(MOVE_PREFIX))]


def _move_champion(client: MlflowClient, name: str, target: str, action: str, reason: str) -> dict[str, Any]:
    """Point `champion` at target. A promotion keeps the outgoing champion as `previous`; a rollback drops
    `previous` (it would name the version just rolled back from, and a second rollback would restore it)."""
    current = alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) == str(target):
        return {}
    if action == "rollback":
        if alias_version(client, name, PREVIOUS) is not None:
            client.delete_registered_model_alias(name, PREVIOUS)
    elif current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current.version))
    client.set_registered_model_alias(name, CHAMPION, str(target))
    move = {
        "action": action,
        "to_version": str(target),
        "from_version": str(current.version) if current else None,
        "who": _actor(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "why": reason,
    }
    _append_move(client, name, move)
    log.info("%s: champion %s -> %s (%s)", name, move["from_version"], target, action)
    return move


def recorded_decision(tags: dict[str, str]) -> dict[str, Any] | None:
    """The gate decision recorded on a model version's tags, if any."""
    raw = tags.get(GATE_PREFIX + "decision")
    return json.loads(raw) if raw else None


def promote(version: str, cfg: Config) -> dict[str, Any]:
    """Move `champion` to the candidate, only with a recorded passing gate decision and no failed serving
    check of it recorded (the canary's)."""
    client = mlflow_client(cfg)
    name = cfg.registry.model_name
    version = canonical_version(version)
    tags = model_version(client, name, version).tags
    decision = recorded_decision(tags)
    if not decision:
        raise RegistryError(f"{name} v{version}: no gate decision recorded; run the gate first")
    if decision["verdict"] != "pass":
        raise RegistryError(
            f"{name} v{version}: gate verdict is {decision['verdict']!r}: {decision['reason']}"
        )
    if tags.get(CHECK_PREFIX + "passed") == "false":
        raise RegistryError(
            f"{name} v{version}: its serving check failed: {tags.get(CHECK_PREFIX + 'reason', '')}"
        )
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and str(champion.version) == version:
        return {}
    baseline = str(champion.version) if champion else None
    if why := stale_decision(decision, baseline, cfg):
        raise RegistryError(
            f"{name} v{version}: its passing gate decision no longer holds ({why}); gate it again"
        )
    return _move_champion(client, name, version, "promote", decision["reason"])


def model_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """The registered version, or RegistryError naming it when the registry has no such version."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ABSENT:
            raise RegistryError(
                f"{name} has no version {version} in registry {client.tracking_uri}"
            ) from None
        raise


def record_stop(cfg: Config, version: str, reason: str) -> dict[str, Any]:
    """Log that candidate `version` was not promoted and why; `champion` stays where it is."""
    client = mlflow_client(cfg)
    name = cfg.registry.model_name
    current = alias_version(client, name, CHAMPION)
    champion = str(current.version) if current else None
    move = {
        "action": "stop",
        "candidate_version": str(version),
        "to_version": champion,
        "from_version": champion,
        "who": _actor(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "why": reason,
    }
    _append_move(client, name, move)
    return move


def rollback(cfg: Config, to_version: str | None = None, reason: str = "manual rollback") -> dict[str, Any]:
    """Put `champion` back on `previous` (or a named version), logged like a promotion."""
    client = mlflow_client(cfg)
    name = cfg.registry.model_name
    if to_version is None:
        previous = alias_version(client, name, PREVIOUS)
        if previous is None:
            raise RegistryError(
                f"{name}: no `previous` version to roll back to (a rollback uses it up); name one with --to"
            )
        to_version = str(previous.version)
    to_version = canonical_version(to_version)
    mv = model_version(client, name, to_version)
    was_champion = any(
        to_version in (m.get("to_version"), m.get("from_version"))
        for m in promotion_log(cfg)
        if m["action"] != "stop"
    )
    decision = recorded_decision(mv.tags) or {}
    if not was_champion and decision.get("verdict") != "pass":
        raise RegistryError(
            f"{name} v{to_version} was never champion and has no passing gate decision "
            f"({decision.get('verdict', 'not gated')}): gate and promote it instead"
        )
    move = _move_champion(client, name, to_version, "rollback", reason)
    if not move:
        raise RegistryError(f"{name}: v{to_version} is already the champion")
    return move


def undo_promotion(cfg: Config, version: str, reason: str) -> dict[str, Any]:
    """After a failed post-promotion check: when `version` is still the champion, restore `previous`.
    Returns the rollback move, or {} when `version` is not the champion (never promoted, or already undone),
    so a retry never rolls back twice."""
    client = mlflow_client(cfg)
    current = alias_version(client, cfg.registry.model_name, CHAMPION)
    if current is None or str(current.version) != str(version):
        return {}
    return rollback(cfg, None, reason)


def _version_view(mv: ModelVersion, client: MlflowClient) -> dict[str, Any]:
    metrics: dict[str, float] = {}
    if mv.run_id:
        metrics = {k: float(v) for k, v in client.get_run(mv.run_id).data.metrics.items()}
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "aliases": list(mv.aliases),
        "created": mv.creation_timestamp,
        "metrics": metrics,
        "tags": dict(mv.tags),
    }


def show(cfg: Config, last: int = 10) -> dict[str, Any]:
    """Champion, its lineage and the last decisions and moves, as one JSON-ready dict."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(cfg)
    name = cfg.registry.model_name
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ABSENT:  # unreachable or broken: never reported as "no champion"
            raise
        return {
            "model_name": name,
            "champion": None,
            "previous": None,
            "challenger": None,
            "decisions": [],
            "promotions": [],
        }
    aliases = {
        alias: (_version_view(mv, client) if (mv := alias_version(client, name, alias)) else None)
        for alias in (CHAMPION, PREVIOUS, CHALLENGER)
    }
    versions = client.search_model_versions(f"name = '{name}'")
    decisions = [d for mv in versions if (d := recorded_decision(mv.tags))]
    decisions.sort(key=lambda d: d["decided_at"], reverse=True)
    return {
        "model_name": name,
        "tracking_uri": cfg.tracking_uri,
        **aliases,
        "decisions": decisions[:last],
        "promotions": promotion_log(cfg)[-last:],
    }


# ---------------------------------------------------------------------------------------------- CLI
def _current_test_split(cfg: Config, dataset: str | None) -> tuple[pd.DataFrame, Path, str]:
    from garmentseg.data.index import load_dataset
    from garmentseg.data.versioning import data_version

    frame, root = load_dataset(cfg, dataset)
    return frame, root, data_version(cfg) if dataset is None else f"folder:{Path(dataset).resolve()}"


def _format_state(state: dict[str, Any]) -> str:
    lines = [f"model {state['model_name']} ({state.get('tracking_uri', '')})"]
    for alias in (CHAMPION, PREVIOUS, CHALLENGER):
        mv = state.get(alias)
        if mv is None:
            lines.append(f"  {alias:<10} -")
            continue
        score = mv["metrics"].get("test_dice_median")
        tags = mv["tags"]
        lines.append(
            f"  {alias:<10} v{mv['version']}  test_dice_median={score if score is None else f'{score:.4f}'}  "
            f"run={mv['run_id']}  data={tags.get('data_version', '?')}  git={tags.get('git_commit', '?')[:10]}"
        )
    lines.append("decisions (newest first):")
    for d in state["decisions"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(d["decided_at"]))
        lines.append(f"  {when}  v{d['candidate_version']}  {d['verdict']:<6} {d['reason']}")
    lines.append("alias moves and stopped candidates (oldest first):")
    for m in state["promotions"]:
        moved = (
            f"v{m['candidate_version']} not promoted, champion stays v{m['to_version']}"
            if m["action"] == "stop"
            else f"{'v' + m['from_version'] if m['from_version'] else 'none'} -> v{m['to_version']}"
        )
        lines.append(f"  {m['when']}  {m['action']:<8} {moved}  by {m['who']}: {m['why']}")
    return "\n".join(lines)


@contextlib.contextmanager
def _one_line_errors(cfg: Config | None = None) -> Iterator[None]:
    """A registry command's failure as one line naming the registry: a refused move, an unknown version,
    an unreachable or read-only store."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        where = f"registry {cfg.tracking_uri}" if cfg else "registry"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.ClickException(f"{where}: {type(exc).__name__}: {first}") from None


@click.group("registry")
def registry_cli() -> None:
    """MLflow Model Registry: register, gate, promote, rollback, show."""


registry_cli.add_command(bootstrap_auth_cmd)


@registry_cli.command("register")
@click.argument("run_id")
@config_options
def register_cmd(run_id: str, profile: str | None, params: str | None) -> None:
    """Register RUN_ID's model as a new version with alias `challenger`."""
    cfg = load_config(profile, params)
    with _one_line_errors(cfg):
        mv = register(run_id, cfg)
    click.echo(f"{mv.name} version {mv.version} (alias {CHALLENGER})")


@registry_cli.command("gate")
@click.argument("version")
@click.option("--dataset", default=None, help="Score on this contract folder instead of the DVC dataset.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@config_options
def gate_cmd(
    version: str, dataset: str | None, as_json: bool, profile: str | None, params: str | None
) -> None:
    """Score VERSION and the champion on the same test split; exit 1 unless it passes."""
    cfg = load_config(profile, params)
    frame, root, data_version = _current_test_split(cfg, dataset)
    from garmentseg.gate import gate

    with _one_line_errors(cfg):
        decision = gate(version, cfg, frame, root, data_version)
    click.echo(
        json.dumps(decision.to_json(), indent=2) if as_json else f"{decision.verdict}: {decision.reason}"
    )
    raise SystemExit(0 if decision.passed else 1)


@registry_cli.command("promote")
@click.argument("version")
@config_options
def promote_cmd(version: str, profile: str | None, params: str | None) -> None:
    """Make VERSION the champion (needs a passing gate decision that still holds)."""
    cfg = load_config(profile, params)
    with _one_line_errors(cfg):
        move = promote(version, cfg)
    click.echo(
        f"champion: v{canonical_version(version)}"
        + (f" (previous: v{move['from_version']})" if move else " (unchanged)")
    )


@registry_cli.command("rollback")
@click.option("--to", "to_version", default=None, help="Version to restore (default: alias `previous`).")
@click.option("--reason", default="manual rollback", show_default=True)
@config_options
def rollback_cmd(to_version: str | None, reason: str, profile: str | None, params: str | None) -> None:
    """Put `champion` back on the previous (or a named) version: one that was champion before or passed
    the gate. `previous` is used up by it."""
    cfg = load_config(profile, params)
    with _one_line_errors(cfg):
        move = rollback(cfg, to_version, reason)
    click.echo(f"champion: v{move['from_version']} -> v{move['to_version']}")


@registry_cli.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object for scripts.")
@click.option("--last", default=10, show_default=True, help="How many decisions and moves to list.")
@config_options
def show_cmd(as_json: bool, last: int, profile: str | None, params: str | None) -> None:
    """The champion, its lineage, and the last decisions and alias moves."""
    cfg = load_config(profile, params)
    with _one_line_errors(cfg):
        state = show(cfg, last)
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
        return
    click.echo(_format_state(state))

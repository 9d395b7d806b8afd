"""The platform's loops as steps: one function per Airflow task, so the DAGs stay thin shells.

Each step takes a Config and small JSON-able dicts (what Airflow passes between tasks as XCom) and returns
one. Steps are idempotent and keyed by the data version: a retried task finds the work it already did
(the training run for this data and config, the registered version of that run, the recorded gate
decision) instead of doing it twice. Nothing here moves the `champion` alias except `promote_candidate`, and
`roll_back` after a failed post-promotion check. The candidate is deployed as the canary and checked there
before `champion` moves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from garmentseg.config import PARAMS_ENV, PROJECT_PARAMS, Config, ConfigError, load_config

log = logging.getLogger(__name__)

RUN_TAG_DATA = "data_version"
RUN_TAG_CONFIG = "config_digest"


def config_for(params: dict[str, Any] | None = None) -> Config:
    """The Config of one DAG run: its `profile` and `overrides` params over the project's params.yaml. The
    promotion rules (`registry`) are not a run's to change: whoever may trigger a retrain could otherwise
    lower the floor the gate holds a candidate to."""
    params = params or {}
    if "registry" in (params.get("overrides") or {}):
        raise ConfigError(
            "a DAG run's overrides may not change `registry` (the floor and rules the gate promotes by); "
            "change params.yaml, or the deployment's GARMENTSEG__REGISTRY__ settings"
        )
    return load_config(
        params.get("profile"),
        os.environ.get(PARAMS_ENV) or PROJECT_PARAMS,
        overrides=params.get("overrides") or None,
    )


def config_digest(cfg: Config) -> str:
    """Identifies everything that shapes a trained model (profile, model, training, evaluation settings)."""
    relevant = {
        k: v for k, v in cfg.flat().items() if k.split(".")[0] in {"model", "training", "evaluation", "data"}
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- ingest
def _landing(cfg: Config) -> Path:
    return cfg.path(cfg.paths.landing_dir)


def new_landed_batches(cfg: Config, now: float | None = None) -> list[str]:
    """Batch folders in the landing dir that ingest has put nowhere yet (neither dataset nor quarantine),
    and that nothing changed in for `airflow.landing_settle_minutes` (a delivery still arriving waits).

    A batch left in place as unreadable stays listed; its `batch__<id>` run exists, so it is not run again.
    """
    from garmentseg.validation.ingest import where_is

    landing = _landing(cfg)
    if not landing.is_dir():
        return []
    moment = now or time.time()
    settled_before = moment - 60 * cfg.airflow.landing_settle_minutes
    found = []
    for p in sorted(landing.iterdir()):
        if not p.is_dir() or p.name.startswith(".") or where_is(cfg, p.name, p) is not None:
            continue
        if _last_change(p, moment) > settled_before:
            log.info(
                "landed %s: changed in the last %g minutes, still arriving",
                p.name,
                cfg.airflow.landing_settle_minutes,
            )
            continue
        found.append(p.name)
    return found


def _last_change(folder: Path, now: float) -> float:
    """The newest modification time of the folder and everything in it, links as links. A file gone while
    it is listed (an upload's temporary file, renamed) says nothing; nor does a time in the future (a
    studio machine whose clock is ahead, its times kept by the copy): a folder of only such is settled."""
    times = [0.0]
    for path in (folder, *folder.rglob("*")):
        try:
            mtime = path.lstat().st_mtime
        except FileNotFoundError:
            continue
        if mtime <= now:
            times.append(mtime)
    return max(times)


def ingest_run_id(cfg: Config, batch_id: str) -> str:
    """The garment_ingest run of a landed batch: `batch__<id>`; a corrected re-delivery under a quarantined
    id gets its content's digest appended, so it is a new run and is scanned again."""
    from garmentseg.validation.ingest import delivery_digest, quarantined_deliveries

    if not quarantined_deliveries(cfg, batch_id):
        return f"batch__{batch_id}"
    return f"batch__{batch_id}__{delivery_digest(_landing(cfg) / batch_id)[:12]}"


def route_landed_batch(cfg: Config, batch_id: str) -> dict[str, Any]:
    """GX validation of one landed batch and the library's route for it (what `garmentseg ingest` does)."""
    from garmentseg.validation.ingest import check_batch

    result, route = check_batch(_landing(cfg) / batch_id, cfg, batch_id=batch_id)
    data_docs = str(result.data_docs_page or result.data_docs_index or "")
    log.info("batch %s: %s (%s); Data Docs: %s", batch_id, route.action.value, route.reason, data_docs)
    return {
        "batch_id": batch_id,
        "batch_dir": str(result.batch_dir),
        "action": route.action.value,
        "reason": route.reason,
        "report_dir": str(result.report_dir),
        "data_docs": data_docs,
        "errors": sum(1 for f in result.findings if f["severity"] == "error"),
        "warnings": sum(1 for f in result.findings if f["severity"] == "warning"),
        "validated_digest": route.validated_digest,
    }


def ingest_landed_batch(cfg: Config, routed: dict[str, Any]) -> dict[str, Any]:
    """Add a batch routed to ingest to the DVC dataset; `changed` is False when it was already there."""
    from garmentseg.validation.ingest import INGESTED, Action, admit_batch

    if routed["action"] != Action.INGEST:
        raise ValueError(f"batch {routed['batch_id']} is routed to {routed['action']}: {routed['reason']}")
    outcome = admit_batch(
        Path(routed["batch_dir"]),
        cfg,
        batch_id=routed["batch_id"],
        report_dir=Path(routed["report_dir"]),
        data_docs_page=Path(routed["data_docs"]) if routed["data_docs"] else None,
        validated_digest=routed.get("validated_digest"),
    )
    return {
        "batch_id": outcome.batch_id,
        "changed": outcome.status == INGESTED,
        "pairs": outcome.n_pairs,
        "data_version": outcome.data_version,
    }


def quarantine_landed_batch(cfg: Config, routed: dict[str, Any]) -> dict[str, Any]:
    """Move the whole failing batch, with its report, to the quarantine folder."""
    from garmentseg.validation.ingest import quarantine_batch

    outcome = quarantine_batch(
        Path(routed["batch_dir"]),
        cfg,
        Path(routed["report_dir"]),
        batch_id=routed["batch_id"],
        data_docs_page=Path(routed["data_docs"]) if routed["data_docs"] else None,
    )
    return {
        "batch_id": routed["batch_id"],
        "quarantined_to": str(outcome.destination),
        "errors": routed["errors"],
    }


# ------------------------------------------------------------------------------------------ retrain
def sync_data(cfg: Config, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Name the data version this retrain trains on, and make sure any node can rebuild it: a tree that
    lacks paths of its version pulls them from the remote; a version this node holds but never published
    is published (pushed) first, so a worker elsewhere, and the lineage, find it. The run's profile and
    overrides travel on in the result: a Kubernetes pod receives its arguments, not the DAG run's params."""
    from garmentseg.data import plane, versioning

    missing = [name for name, path in plane.dataset_paths(cfg).items() if not path.exists()]
    if missing:
        log.info("pulling %d missing data paths from the remote: %s", len(missing), missing[:5])
        plane.pull(cfg)
    state, _ = plane.data_state(cfg)
    if state.startswith("dirty"):
        log.info("data %s; publishing it", state)
        plane.publish(cfg)
        state, _ = plane.data_state(cfg)
    elif state != "clean":  # "unverified: why" (no DVC repo or remote here): the run's lineage says so
        log.warning(
            "data version %s cannot be checked against the remote: %s", versioning.data_version(cfg), state
        )
    return {
        "data_version": versioning.data_version(cfg),
        "data_state": state,
        "pulled": missing,
        "run": {"profile": cfg.profile, "overrides": (params or {}).get("overrides") or {}},
    }


def validate_training_set(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """Validate every folder of the training set with the batch suite; any failure stops the retrain."""
    from garmentseg.data.index import dataset_folders
    from garmentseg.validation import validate_batch

    reports_root = cfg.path(cfg.paths.reports_dir) / "training-set" / data["data_version"].replace(":", "_")
    results = {}
    for batch_id, folder in dataset_folders(cfg.path(cfg.paths.data_dir)):
        result = validate_batch(folder, cfg, report_dir=reports_root / batch_id.replace("/", "_"))
        results[batch_id] = {"passed": result.passed, "report_dir": str(result.report_dir)}
    failed = [name for name, r in results.items() if not r["passed"]]
    if not results:
        raise RuntimeError(f"no dataset folders under {cfg.path(cfg.paths.data_dir)}; nothing to train on")
    if failed:
        raise RuntimeError(f"training set failed validation in {failed}; see {reports_root}")
    return {"folders": results, "data_version": data["data_version"]}


def prepare_tensors(cfg: Config) -> dict[str, Any]:
    """Resize once and cache the tensors for the model's input size (later steps never decode PNGs)."""
    from garmentseg import prepare
    from garmentseg.data.index import load_dataset

    frame, root = load_dataset(cfg)
    prepared = prepare.prepare_for(cfg, frame, root)
    return {"index_hash": prepared.index_hash, "input": f"{prepared.input_height}x{prepared.input_width}"}


def _finished_run(cfg: Config, data_version: str, digest: str) -> Any | None:
    import mlflow

    from garmentseg.training import ensure_experiment

    experiment_id = ensure_experiment(cfg)
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.{RUN_TAG_DATA} = '{data_version}' and tags.{RUN_TAG_CONFIG} = '{digest}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return runs[0] if runs else None


def screen_labels(cfg: Config, data: dict[str, Any]) -> dict[str, Any]:
    """Audit the training set's labels with the champion before training (labels.screen): suspects above
    `labels.exclude_score`, and labels stewards confirmed wrong, are left out of this run."""
    from garmentseg.data.index import load_dataset
    from garmentseg.labels.screen import screen_training_set

    frame, root = load_dataset(cfg)
    screening = screen_training_set(cfg, frame, root, name=f"retrain-{data['data_version']}")
    return screening.summary()


def train_candidate(cfg: Config, data: dict[str, Any], screening: dict[str, Any]) -> dict[str, Any]:
    """Train on the run's data version (checked out from the remote when this worker lacks it, as a GPU node
    or pod does); a retry for the same data and config reuses the run."""
    from garmentseg import training
    from garmentseg.data import plane

    if plane.materialise(cfg, data["data_version"]):
        log.info("data version %s checked out from the remote onto this worker", data["data_version"])
    digest = config_digest(cfg)
    if (run := _finished_run(cfg, data["data_version"], digest)) is not None:
        log.info("reusing run %s for data %s, config %s", run.info.run_id, data["data_version"], digest)
        return {"run_id": run.info.run_id, "reused": True}
    tags = {RUN_TAG_CONFIG: digest, RUN_TAG_DATA: data["data_version"]}
    result = training.train(cfg, extra_tags=tags, screening=screening)
    return {"run_id": result.run_id, "model_uri": result.model_uri, "reused": False}


def drift_check(
    cfg: Config, validated: dict[str, Any], trained: dict[str, Any], dag_run: dict[str, str] | None = None
) -> dict[str, Any]:
    """The training set's drift against the champion's, recorded on the training run; a drift beyond
    `validation.drift_z_warn` is this task's result and a note on the DAG run, never a failure."""
    from garmentseg.orchestration.run_notes import note_dag_run
    from garmentseg.validation.training_drift import DRIFTED, check_training_drift, training_set_metadata

    result = check_training_drift(cfg, training_set_metadata(validated["folders"]), trained["run_id"])
    if result["verdict"] == DRIFTED and dag_run:
        result["run_note"] = note_dag_run(cfg, dag_run["dag_id"], dag_run["run_id"], result["note"])
    return result


def evaluate_candidate(cfg: Config, trained: dict[str, Any]) -> dict[str, Any]:
    """The full-resolution test metrics of the run; a run without its headline metric stops here."""
    from mlflow import MlflowClient

    metrics = MlflowClient(cfg.tracking_uri).get_run(trained["run_id"]).data.metrics
    if "test_dice_median" not in metrics:
        raise RuntimeError(f"run {trained['run_id']} has no test_dice_median; evaluation did not finish")
    return {k: v for k, v in metrics.items() if k.startswith(("test_", "valid_", "threshold"))}


def register_candidate(cfg: Config, trained: dict[str, Any]) -> dict[str, Any]:
    from garmentseg import registry

    version = registry.register(trained["run_id"], cfg)
    return {
        "version": str(version.version),
        "run_id": trained["run_id"],
        "model_name": cfg.registry.model_name,
    }


def gate_candidate(cfg: Config, candidate: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    from garmentseg.data.index import load_dataset
    from garmentseg.gate import gate

    frame, root = load_dataset(cfg)
    return gate(candidate["version"], cfg, frame, root, data["data_version"]).to_json()


def _held_out_shots(cfg: Config, count: int) -> list[Path]:
    from garmentseg.data.index import load_dataset

    frame, root = load_dataset(cfg)
    test = frame[frame["split"] == "test"].sort_values(["garment_id", "view"]).head(count)
    return [root / p for p in test["raw_path"]]


def _candidate_uri(candidate: dict[str, Any]) -> str:
    return f"models:/{candidate['model_name']}/{candidate['version']}"


def deploy_canary(cfg: Config, candidate: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    """Deploy the gated candidate as the canary (the instance following `challenger`) before the champion
    moves: its Bento pinned to the version, and the canary answering with it. Without a running canary the
    serving check starts a temporary service pinned to the version instead."""
    if not decision["passed"]:
        return {"skipped": True, "url": None, "reason": "gate did not pass"}
    from garmentseg.deploy import deploy, service_url

    return deploy(cfg, _candidate_uri(candidate), url=service_url(cfg, canary=True))


def serving_check(
    cfg: Config, candidate: dict[str, Any], decision: dict[str, Any], canary: dict[str, Any]
) -> dict[str, Any]:
    """TFX's InfraValidator on the canary: held-out shots through the candidate, served for real, before
    promotion. The result is recorded on the version, so a failed check is visible where the decision is."""
    if not decision["passed"]:
        return {"passed": False, "skipped": True, "reason": "gate did not pass"}
    from garmentseg.deploy import serving_check as check
    from garmentseg.gate import record_serving_check

    result = check(
        cfg,
        _candidate_uri(candidate),
        _held_out_shots(cfg, 3),
        cfg.serving.latency_budget_ms,
        url=canary.get("url"),
    )
    record_serving_check(cfg, candidate["version"], result)
    return result


def promote_candidate(cfg: Config, candidate: dict[str, Any]) -> dict[str, Any]:
    from garmentseg import registry

    move = registry.promote(candidate["version"], cfg)
    return {"version": candidate["version"], "model_name": candidate["model_name"], "move": move}


def explain_stop(decision: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """The champion stays; say why (the promote rule's reason), loudly, in the task log and the result."""
    from garmentseg.gate import promotion_verdict

    reason = promotion_verdict(decision, check).reason
    log.warning("candidate v%s not promoted: %s", decision["candidate_version"], reason)
    return {"promoted": False, "candidate_version": decision["candidate_version"], "reason": reason}


def stop_candidate(cfg: Config, decision: dict[str, Any], check: dict[str, Any]) -> dict[str, Any]:
    """`explain_stop`, and the stop with its reason appended to the registry's promotion log."""
    from garmentseg import registry

    stopped = explain_stop(decision, check)
    registry.record_stop(cfg, stopped["candidate_version"], stopped["reason"])
    return stopped


def deploy_champion(cfg: Config, promotion: dict[str, Any]) -> dict[str, Any]:
    """Build the Bento pinned to the new champion; a running service hot-reloads it from the alias."""
    from garmentseg.deploy import deploy

    return deploy(cfg, f"models:/{promotion['model_name']}/{promotion['version']}")


def smoke_test(cfg: Config, deployment: dict[str, Any]) -> dict[str, Any]:
    """One held-out shot through the deployed endpoint; a wrong answer fails the run loudly."""
    from garmentseg.deploy import smoke_test as smoke

    return smoke(cfg, deployment, _held_out_shots(cfg, 1)[0])


def roll_back(cfg: Config, candidate: dict[str, Any] | None) -> dict[str, Any]:
    """Runs only when a post-promotion check (deploy, smoke test) failed: restore `previous` if the candidate
    is still the champion, then fail, so the run says the rollout failed. A retry finds nothing to undo and
    fails the same way."""
    from garmentseg import registry

    if candidate is None:  # the run failed before a candidate was registered: nothing was promoted
        raise RuntimeError("an upstream task failed before a candidate was registered: nothing to roll back")
    reason = f"v{candidate['version']}'s post-promotion check failed (deploy or smoke_test)"
    move = registry.undo_promotion(cfg, candidate["version"], reason)
    if move:
        log.error("%s: champion rolled back v%s -> v%s", reason, move["from_version"], move["to_version"])
        raise RuntimeError(f"{reason}; champion rolled back to v{move['to_version']}")
    raise RuntimeError(
        f"an upstream task failed and v{candidate['version']} is not the champion: nothing to roll back"
    )


# ---------------------------------------------------------------------------------------- retention
def collect_garbage(cfg: Config) -> dict[str, Any]:
    """The retention policy applied (garmentseg.retention): count and bytes of each kind removed, the
    protected lineage and the notes; each removed item is in the task log."""
    from garmentseg.retention.plan import gc

    return {k: v for k, v in gc(cfg, dry_run=False).items() if k != "removed"}


# ------------------------------------------------------------------------------------------- review
# Beside a delivery's cutouts: what was cut out and queued; written last, it marks the delivery done.
DELIVERY_RECORD = "delivery.json"


def new_deliveries(cfg: Config) -> list[str]:
    """Delivery folders under `paths.deliveries_dir` the weekly job has not finished cutting out as they are
    now: never cut out, or changed since (a shot added, or replaced: the studio re-delivers a file it fixed,
    or its upload was still running when the job last ran)."""
    from garmentseg.review.deliveries import cut_out_as_it_is

    root, done = cfg.path(cfg.paths.deliveries_dir), cfg.path(cfg.paths.cutouts_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and not cut_out_as_it_is(p, done / p.name / DELIVERY_RECORD)
    )


def cut_out_deliveries(cfg: Config, deliveries: list[str]) -> dict[str, Any]:
    """Cut out each delivery's shots with the champion, as `garmentseg predict` does, into
    `paths.cutouts_dir/<delivery>/`, queueing the doubtful cutouts for review."""
    from garmentseg.predict import load_model
    from garmentseg.review.store import ReviewQueue

    model, queue = load_model(cfg.serving.model_uri, cfg), ReviewQueue.from_config(cfg)
    done, failed = {}, {}
    for delivery in deliveries:  # one delivery that fails does not hold back the others
        try:
            done[delivery] = cut_out_delivery(cfg, model, queue, delivery)
        except (OSError, ValueError) as exc:
            log.error("delivery %s not cut out: %s", delivery, exc)
            failed[delivery] = str(exc)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(deliveries)} deliveries not cut out (the others are, and queued): "
            + "; ".join(f"{name}: {why}" for name, why in failed.items())
        )
    return {"deliveries": done, "queued": sum(d["queued"] for d in done.values())}


def cut_out_delivery(cfg: Config, model: Any, queue: Any, delivery: str) -> dict[str, Any]:
    """One delivery cut out and its doubtful cutouts queued. Its record is written last, so a retry redoes
    only unfinished deliveries (and the queue keeps one item per shot)."""
    from garmentseg.predict import cut_out_folder, list_shots
    from garmentseg.review.deliveries import delivery_fingerprint

    out, folder = cfg.path(cfg.paths.cutouts_dir) / delivery, cfg.path(cfg.paths.deliveries_dir) / delivery
    fingerprint = delivery_fingerprint(folder)  # before the listing: a change while it runs is seen next week
    shots, ignored = list_shots(folder)
    result = cut_out_folder(
        model, shots, out, cfg.serving.max_pixels, queue, alpha=cfg.serving.alpha, ignored=ignored
    )
    record = {
        "written": result.written,
        "queued": result.queued,
        "skipped": [f"{name}: {reason}" for name, reason in result.skipped],
        "not_queued": [f"{name}: {reason}" for name, reason in result.not_queued],
        "model_version": model.model_version,
        "fingerprint": fingerprint,
    }
    out.mkdir(parents=True, exist_ok=True)  # a delivery with no shot at all is done too, with its record
    written = out / f".{DELIVERY_RECORD}.tmp"
    written.write_text(json.dumps(record, indent=2))
    written.replace(out / DELIVERY_RECORD)  # whole or absent: a kill mid-write leaves the delivery to redo
    log.info("delivery %s: %d cut out, %d queued for review", delivery, result.written, result.queued)
    return record


def import_returned_corrections(cfg: Config, folder: str, by: str) -> dict[str, Any]:
    """`garmentseg review import` as a task: the retouched folder validated and ingested as a new batch,
    its queue items closed. `changed` is False when this folder was imported before; a refused folder (`ok`
    False) is quarantined whole (or, answering no open item, left where it is), nothing lost, and `refused`
    names each file and reason."""
    from garmentseg.review.roundtrip import ReturnedFolderError, import_corrections
    from garmentseg.review.store import ReviewQueue
    from garmentseg.validation.ingest import INGESTED

    try:
        result = import_corrections(cfg, ReviewQueue.from_config(cfg), Path(folder), by=by)
    except ReturnedFolderError as exc:
        return {
            "ok": False,
            "batch_id": None,
            "message": str(exc).splitlines()[0],
            "refused": exc.problems,
            "changed": False,
            "closed": [],
            "data_version": None,
        }
    return {
        "ok": result.ok,
        "batch_id": result.outcome.batch_id,
        "message": result.outcome.message,
        "refused": result.refused,
        "changed": result.outcome.status == INGESTED,
        "closed": result.closed,
        "data_version": result.outcome.data_version,
    }

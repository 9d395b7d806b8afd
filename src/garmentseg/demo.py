"""`garmentseg demo`: the platform's whole loop on embedded defaults, narrated for a newcomer.

Start the production Bento service and its canary (following the registry's `champion` and `challenger`),
synthesise the studio dataset (`dvc repro`), land a good and a deliberately broken batch and ingest each
through the `garment_ingest` DAG, run `garment_retrain` through Airflow (real Airflow executing it: train,
evaluate, register, gate, deploy to the canary and its serving check, promote, deploy, smoke test), cut out
a held-out shot through production, take one turn of the review loop, and summarise where everything is.
Safe to run again: every run lands a new batch, so the second retrain is gated against the first run's
champion.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from garmentseg.cliopts import params_option
from garmentseg.config import Config, load_config
from garmentseg.orchestration.embedded import (
    CommandError,
    EmbeddedAirflow,
    console_script,
    run_logged,
    scripts_on_path,
)

log = logging.getLogger(__name__)

GOOD_BATCH_SEED, BROKEN_BATCH_SEED = 1000, 5000
NEW_SHOTS_SEED = 9000  # the review turn's delivery of new shots
DEMO_REVIEWER = "demo reviewer"
QUEUE_LINES = 12  # the summary's view of the review queue, worst estimate first
# What a careless delivery looks like: a broken file, a cutout without alpha, two garments' cutouts
# swapped, a mis-named file and a decompression bomb (3 garments x 3 views leave room for all of them).
DEMO_DEFECTS = (
    "truncated_png",
    "cutout_without_alpha",
    "swapped_cutouts",
    "bad_file_name",
    "decompression_bomb",
)


@dataclass
class DemoSummary:
    """Everything the closing summary prints, also written as JSON for tests and scripts."""

    data_version: str = ""
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_docs: str = ""
    retrain_state: str = ""
    gate: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] = field(default_factory=dict)
    test_dice_median: float | None = None
    cutout_png: str = ""
    endpoint_latency_ms: float | None = None
    review: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


@contextmanager
def step(summary: DemoSummary, title: str) -> Iterator[None]:
    """Print a step header and its wall time; the seconds go into the summary."""
    number = len(summary.steps) + 1
    click.secho(f"\n[{number}] {title}", bold=True)
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    summary.steps[title] = round(took, 1)
    click.secho(f"    done in {took:.0f}s", fg="green")


def _progress(line: str) -> None:
    """Echo the lines that show a long command moving: a DAG task ending, a DVC stage starting."""
    if "[DAG TEST] end task" not in line and "Running stage" not in line:
        return
    if "task_id=" in line:
        click.echo("    task " + line.split("task_id=", 1)[1].split()[0] + " finished")
    else:
        click.echo("    " + line.strip())


def run_dag(airflow: EmbeddedAirflow, dag_id: str, conf: dict[str, Any], log_file: Path) -> str:
    """One DAG run, executed by real Airflow; anything but success stops the demo with the log's path."""
    state = airflow.dags_test(dag_id, conf, log_file, on_line=_progress)
    if state != "success":
        tail = "\n".join(log_file.read_text().splitlines()[-15:])
        raise DemoError(f"DAG {dag_id} ended {state}; full log: {log_file}\n{tail}")
    return state


def build_dataset(cfg: Config, logs: Path) -> None:
    """`dvc repro index`: the demo dataset from its seed (skipped by DVC when nothing changed)."""
    run_logged(
        [sys.executable, "-m", "dvc", "repro", "index"],
        logs / "dvc-repro.log",
        env=scripts_on_path(os.environ),
        cwd=cfg.root,
        on_line=_progress,
    )


def land_batches(cfg: Config, batch_garments: int) -> tuple[str, str]:
    """A new good batch and a broken one in the landing folder; their names count up run by run."""
    from garmentseg.data.synth import synthesize
    from garmentseg.validation.defects import inject_defects

    landing = cfg.path(cfg.paths.landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    runs = 1 + len(list(landing.glob("studio-week-*")))
    good, broken = f"studio-week-{runs:03d}", f"studio-broken-{runs:03d}"
    synthesize(landing / good, batch_garments, GOOD_BATCH_SEED + runs, cfg)
    synthesize(landing / broken, 3, BROKEN_BATCH_SEED + runs, cfg)
    defects = inject_defects(landing / broken, DEMO_DEFECTS)
    click.echo(f"    landed {good} ({batch_garments} garments) and {broken} with {len(defects)} defects")
    return good, broken


@contextmanager
def platform_services(cfg: Config, logs: Path) -> Iterator[str]:
    """Production (following `champion`) and its canary (following `challenger`), started before any model
    exists, as a platform runs them: the retrain rolls its candidate out to the canary and the new champion
    to production instead of starting temporary services. Yields production's URL; both stop at the end."""
    from garmentseg.deploy import service_url, start_service, stop_service
    from garmentseg.registry import CHALLENGER

    services = {
        "production": (cfg.serving.model_uri, cfg.serving.port, "serving.port"),
        "canary": (
            f"models:/{cfg.registry.model_name}@{CHALLENGER}",
            cfg.serving.canary_port,
            "serving.canary_port",
        ),
    }
    running = []
    try:
        for role, (model_uri, port, setting) in services.items():
            with socket.socket() as probe:
                if probe.connect_ex((cfg.serving.host, port)) == 0:
                    raise DemoError(
                        f"{role} service: port {port} on {cfg.serving.host} is taken; stop what listens there or"
                        f" set {setting} (GARMENTSEG__SERVING__{setting.split('.')[1].upper()})"
                    )
            with open(logs / f"service-{role}.log", "ab") as log_file:
                running.append(
                    start_service(
                        cfg, model_uri, cfg.serving.host, port, stdout=log_file, stderr=subprocess.STDOUT
                    )
                )
            click.echo(f"    {role:<10} {service_url(cfg, canary=role == 'canary')} follows {model_uri}")
        yield service_url(cfg)
    finally:
        for proc in running:
            stop_service(proc)


def cut_out_held_out_shot(cfg: Config, url: str, out_png: Path) -> tuple[float, str]:
    """Cut out one held-out test shot through the production service once it serves the champion."""
    import httpx

    from garmentseg.client import cut_out
    from garmentseg.data.index import load_dataset
    from garmentseg.deploy import wait_ready

    frame, root = load_dataset(cfg)
    shot = root / frame[frame["split"] == "test"].sort_values(["garment_id", "view"]).iloc[0]["raw_path"]
    wait_ready(url)
    with httpx.Client(timeout=60) as client:
        cut_out(cfg, url, shot.read_bytes(), filename=shot.name, client=client)  # warm up
        reply = cut_out(cfg, url, shot.read_bytes(), filename=shot.name, client=client)
    if reply.status != 200:
        raise DemoError(f"/cutout answered {reply.describe()}")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    out_png.write_bytes(reply.content)
    return reply.latency_ms, reply.model_version or "?"


def run_demo(cfg: Config, *, batch_garments: int = 6) -> DemoSummary:
    from garmentseg import registry
    from garmentseg.data.versioning import data_version

    started = time.monotonic()
    summary = DemoSummary()
    state = cfg.path(cfg.paths.state_dir)
    logs = state / "demo" / "logs"
    airflow = EmbeddedAirflow.for_project(cfg)
    with step(summary, "Embedded Airflow and MLflow: migrate their SQLite DBs, create the one-slot DVC pool"):
        airflow.prepare(cfg.airflow.dvc_pool, logs)
        registry.migrate_tracking_store(cfg)  # before the Bento servers start polling the registry together
    with step(summary, "Studio dataset: `dvc repro index` (synthetic studio -> garment-level index)"):
        build_dataset(cfg, logs)
        click.echo(f"    data version {data_version(cfg)}")
    with ExitStack() as services:
        # Started after the synthesis: their imports share the 2 cores with the lighter ingest steps.
        with step(
            summary, "BentoML: start production (follows champion) and its canary (follows challenger)"
        ):
            production = services.enter_context(platform_services(cfg, logs))
        with step(summary, "A studio delivers: one good batch and one broken batch land"):
            good, broken = land_batches(cfg, batch_garments)
        for batch in (good, broken):
            with step(summary, f"Airflow garment_ingest for {batch}: GX validation -> ingest or quarantine"):
                run_dag(airflow, "garment_ingest", {"batch_id": batch}, logs / f"ingest-{batch}.log")
                summary.batches[batch] = _batch_outcome(cfg, batch)
                click.echo(f"    {batch}: {summary.batches[batch]['status']}")
        summary.data_version = data_version(cfg)
        summary.data_docs = str(cfg.path(cfg.paths.reports_dir) / "data_docs" / "index.html")
        with step(
            summary,
            "Airflow garment_retrain: train -> register -> gate -> canary check -> promote -> deploy -> smoke test",
        ):
            summary.retrain_state = run_dag(
                airflow, "garment_retrain", {"profile": cfg.profile}, logs / "retrain.log"
            )
        shown = registry.show(cfg, last=1)
        summary.gate = shown["decisions"][0] if shown["decisions"] else {}
        champion = shown.get("champion") or {}
        summary.champion = {"version": champion.get("version"), "tags": champion.get("tags", {})}
        summary.test_dice_median = (champion.get("metrics") or {}).get("test_dice_median")
        with step(summary, "BentoML: production cuts out a held-out shot"):
            out = state / "demo" / "cutout.png"
            summary.endpoint_latency_ms, served = cut_out_held_out_shot(cfg, production, out)
            summary.cutout_png = str(out)
            click.echo(f"    model v{served} answered in {summary.endpoint_latency_ms:.0f} ms -> {out}")
    review_turn(cfg, airflow, summary, logs)
    summary.seconds = round(time.monotonic() - started, 1)
    (state / "demo" / "summary.json").write_text(json.dumps(summary.__dict__, indent=2, default=str))
    return summary


def deliver_new_shots(cfg: Config, garments: int) -> tuple[str, Path]:
    """A studio delivers new shots of patterned garments to cut out (`paths.deliveries_dir/<delivery>/`); the
    synthetic studio's true cutouts of them are kept aside as what a retoucher will send back."""
    from garmentseg.data.synth import synthesize

    deliveries = cfg.path(cfg.paths.deliveries_dir)
    deliveries.mkdir(parents=True, exist_ok=True)
    runs = 1 + len(list(deliveries.glob("studio-shots-*")))
    delivery = f"studio-shots-{runs:03d}"
    studio = cfg.path(cfg.paths.state_dir) / "demo" / "retoucher" / delivery
    # Patterned garments, the hard case the demo model is least sure of: a delivery with cutouts to review.
    patterned = cfg.synth.hard_cases.model_copy(update={"complex_pattern": 1.0})
    synth = cfg.synth.model_copy(update={"hard_cases": patterned})
    synthesize(studio, garments, NEW_SHOTS_SEED + runs, cfg.model_copy(update={"synth": synth}))
    (deliveries / delivery).mkdir()
    for shot in sorted((studio / "raw").glob("*.png")):
        shutil.copyfile(shot, deliveries / delivery / shot.name)
    return delivery, studio / "cutouts"


def send_to_retouch(cfg: Config, delivery: str, truths: Path, folder: Path) -> list[int]:
    """A reviewer sends this delivery's worst cutout to retouch; it and the still pending ones are exported,
    and the synthetic studio's true cutouts stand in for the retoucher's corrections. The queued item ids."""
    from garmentseg.review.roundtrip import export_items
    from garmentseg.review.store import ReviewQueue

    queue = ReviewQueue.from_config(cfg)
    mine = {shot.stem for shot in (cfg.path(cfg.paths.deliveries_dir) / delivery).glob("*.png")}
    queued = [item for item in queue.items(["pending"]) if item.file in mine]
    if not queued:
        return []
    queue.decide(queued[0].id, "retouch", by=DEMO_REVIEWER)
    export_items(queue, folder, cfg, pending=True)
    for exported in sorted(folder.glob("*/*.png")):  # other open items are not this retoucher's
        if exported.stem not in mine:
            exported.unlink()
    for proposed in sorted((folder / "cutouts").glob("*.png")):
        shutil.copyfile(truths / proposed.name, proposed)
    return [item.id for item in queued]


def review_turn(
    cfg: Config, airflow: EmbeddedAirflow, summary: DemoSummary, logs: Path, garments: int = 2
) -> None:
    """One turn of the review loop: new shots cut out by the weekly job, the doubtful ones queued, their
    corrections imported through Airflow as a new data version (emitting the dataset asset), none left open."""
    from garmentseg.data.versioning import data_version
    from garmentseg.orchestration.tasks import DELIVERY_RECORD
    from garmentseg.review.store import ReviewQueue

    with step(
        summary, "New patterned shots delivered; Airflow garment_review cuts them out, queues the doubtful"
    ):
        delivery, truths = deliver_new_shots(cfg, garments)
        run_dag(airflow, "garment_review", {}, logs / f"review-{delivery}.log")
        record = json.loads((cfg.path(cfg.paths.cutouts_dir) / delivery / DELIVERY_RECORD).read_text())
        click.echo(f"    {delivery}: {record['written']} cut out, {record['queued']} queued for review")
    with step(summary, "Retouch round trip: export, correct, Airflow garment_review_import (a new batch)"):
        before, folder = data_version(cfg), cfg.path(cfg.paths.state_dir) / "demo" / "retouch" / delivery
        queued = send_to_retouch(cfg, delivery, truths, folder)
        if queued:
            conf = {"folder": str(folder), "by": DEMO_REVIEWER}
            run_dag(airflow, "garment_review_import", conf, logs / f"review-import-{delivery}.log")
        queue = ReviewQueue.from_config(cfg)
        left = [item.file for item in queue.items(["pending", "retouch"]) if item.id in queued]
        if left:
            raise DemoError(f"review items of {delivery} still open after the import: {left}")
        summary.review = {
            "delivery": delivery,
            "cut_out": record["written"],
            "queued": len(queued),
            "data_version_before": before,
            "data_version_after": data_version(cfg),
            "items": [
                {k: getattr(item, k) for k in ("id", "file", "state", "estimate", "decided_by")}
                for item in queue.items()
            ],
        }
        click.echo(
            f"    {len(queued)} corrections in: data version {before} -> {summary.review['data_version_after']}"
        )


def _batch_outcome(cfg: Config, batch: str) -> dict[str, Any]:
    """Where ingest put the batch (the library's answer) and what its report found."""
    from garmentseg.validation.ingest import where_is

    status, where = where_is(cfg, batch) or ("unknown", cfg.path(cfg.paths.landing_dir) / batch)
    report = cfg.path(cfg.paths.reports_dir) / batch
    findings = report / "findings.json"
    errors = (
        [f for f in json.loads(findings.read_text()) if f["severity"] == "error"] if findings.exists() else []
    )
    return {
        "status": status,
        "where": str(where),
        "report": str(report),
        "errors": len(errors),
        "checks_failed": sorted({f["check"] for f in errors}),
    }


def print_summary(cfg: Config, summary: DemoSummary) -> None:
    """The closing summary, with commands that work as printed (this environment's scripts by path)."""
    airflow = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in EmbeddedAirflow.for_project(cfg).settings().items()
    )
    gate = summary.gate
    dice = "n/a" if summary.test_dice_median is None else f"{summary.test_dice_median:.4f}"
    click.secho("\nSummary", bold=True)
    lines = [
        f"data version         {summary.data_version}",
        *(
            f"batch {name:<15} {o['status']}"
            + (f" ({o['errors']} errors: {', '.join(o['checks_failed'])})" if o["errors"] else "")
            + f"  report: {o['report']}"
            for name, o in summary.batches.items()
        ),
        f"Data Docs            {summary.data_docs}",
        f"retrain DAG          {summary.retrain_state}",
        f"gate decision        {gate.get('verdict', '?')} ({gate.get('mode', '?')}): {gate.get('reason', '')}",
        f"champion             {cfg.registry.model_name} v{summary.champion.get('version')}  test median Dice {dice}",
        f"endpoint latency     {summary.endpoint_latency_ms:.0f} ms for one {cfg.sources['studio'].width}x"
        f"{cfg.sources['studio'].height} shot -> {summary.cutout_png}",
        *_review_lines(summary.review),
        f"wall time            {summary.seconds:.0f} s",
        "",
        "Look at what it produced:",
        f"  Data Docs   open {summary.data_docs}",
        f"  MLflow UI   {console_script('mlflow')} ui --backend-store-uri {cfg.tracking_uri}  (http://127.0.0.1:5000)",
        f"  Airflow UI  {airflow} {console_script('airflow')} standalone",
        f"  Registry    {console_script('garmentseg')} registry show --params {cfg.root / 'params.yaml'}",
        f"  Review page {console_script('garmentseg')} review serve --params {cfg.root / 'params.yaml'}"
        f"  (http://{cfg.serving.host}:{cfg.serving.review_port}/, sign in with ${cfg.serving.auth_token_env})",
    ]
    click.echo("\n".join("  " + line for line in lines))


def _review_lines(review: dict[str, Any]) -> list[str]:
    """The review turn in the summary: what was queued, the data version it moved, and the queue."""
    if not review:
        return []
    pending = sum(item["state"] in {"pending", "retouch"} for item in review["items"])
    return [
        f"review turn          {review['delivery']}: {review['cut_out']} cut out, {review['queued']} queued, "
        f"corrections imported: data version {review['data_version_before']} -> {review['data_version_after']}, "
        f"{pending} open in the queue",
        *(
            f"  queue #{item['id']:<4} {item['file']:<46} {item['state']:<9} estimate {item['estimate']:.3f}"
            f"  {item['decided_by'] or ''}"
            for item in review["items"][:QUEUE_LINES]
        ),
        *([f"  ... {len(review['items']) - QUEUE_LINES} more"] if len(review["items"]) > QUEUE_LINES else []),
    ]


@click.command("demo")
@click.option("--profile", default=None, help="params.yaml profile (default: demo).")
@params_option
@click.option("--batch-garments", default=6, show_default=True, help="Garments in the landed good batch.")
@click.option(
    "--fresh", is_flag=True, help="Start from nothing: delete var/ (MLflow, Airflow, reports) first."
)
def demo(profile: str | None, params: str | None, batch_garments: int, fresh: bool) -> None:
    """Run the whole loop end to end on embedded defaults and summarise it."""
    cfg = load_config(profile or "demo", params)
    if fresh:
        shutil.rmtree(cfg.path(cfg.paths.state_dir), ignore_errors=True)
    try:
        summary = run_demo(cfg, batch_garments=batch_garments)
    except (DemoError, CommandError) as exc:
        raise click.ClickException(str(exc)) from exc
    print_summary(cfg, summary)

"""Ingest for real: a failing batch is quarantined whole (every byte kept), a passing one goes into a
temporary git + DVC project once (a second ingest is a no-op), an unreadable one is left alone, by the
CLI and by the garment_ingest DAG alike."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.config import Config
from garmentseg.data.index import INGEST_RECORD
from garmentseg.data.plane import DatasetError
from garmentseg.orchestration import tasks
from garmentseg.orchestration.embedded import EmbeddedAirflow
from garmentseg.validation import ingest_batch
from garmentseg.validation.defects import inject_defects, os_junk_files, write_clean_batch
from garmentseg.validation.ingest import Action, check_batch, tree_digest
from tests.data.test_validation import GARMENTS, H, W, small_project


@pytest.fixture
def project(tmp_path) -> Config:
    """A throwaway project: params.yaml (small studio size), git and DVC initialised, local remote."""
    cfg = small_project(tmp_path / "project")
    subprocess.run(["git", "init", "-q"], cwd=cfg.root, check=True)
    from garmentseg.data import versioning

    versioning.init(cfg.root, cfg.path(cfg.paths.dvc_remote))
    return cfg


def landed(cfg: Config, name: str, *, broken: bool, seed: int = 0) -> Path:
    batch = cfg.path(cfg.paths.landing_dir) / name
    write_clean_batch(batch, GARMENTS if broken else 2, width=W, height=H, seed=seed)
    if broken:
        inject_defects(batch)
    return batch


def as_delivered(digest: dict[str, str]) -> dict[str, str]:
    """A tree_digest without what the platform adds: a quarantine's report, an ingested batch's record."""
    return {k: v for k, v in digest.items() if not k.startswith("_report/") and k != INGEST_RECORD}


def test_failing_batch_is_quarantined_whole_with_its_report(tmp_path):
    cfg = small_project(tmp_path / "project")
    batch = landed(cfg, "b-bad", broken=True)
    before = tree_digest(batch)
    outcome = ingest_batch(batch, cfg)
    quarantine = cfg.path(cfg.paths.quarantine_dir)
    assert (outcome.status, outcome.exit_code, outcome.destination) == (
        "quarantined",
        1,
        quarantine / "b-bad",
    )
    assert not batch.exists()
    assert as_delivered(tree_digest(outcome.destination)) == before  # every byte, nothing else
    report = outcome.destination / "_report"
    assert {"findings.json", "metadata.parquet", "gallery.html", "summary.json", "README.txt"} <= {
        p.name for p in report.iterdir()
    }
    assert str(outcome.data_docs_page) in (report / "README.txt").read_text()

    again = ingest_batch(batch, cfg)  # the landed folder is gone: the batch is already in quarantine
    assert (again.status, again.exit_code, again.destination) == ("quarantined", 1, quarantine / "b-bad")

    # A second delivery under the same id never overwrites the first one.
    first = tree_digest(outcome.destination)
    batch = landed(cfg, "b-bad", broken=True, seed=1)
    second_before = tree_digest(batch)
    second = ingest_batch(batch, cfg)
    assert second.destination == quarantine / "b-bad.2"
    assert tree_digest(outcome.destination) == first
    assert as_delivered(tree_digest(second.destination)) == second_before


OTHER_FILE_SYSTEM = Path("/dev/shm")
on_another_file_system = pytest.mark.skipif(
    not OTHER_FILE_SYSTEM.is_dir() or OTHER_FILE_SYSTEM.stat().st_dev == Path(__file__).stat().st_dev,
    reason="needs /dev/shm on a file system other than the checkout's, to make rename(2) fail with EXDEV",
)


@pytest.fixture
def failing_batch_elsewhere(tmp_path):
    """(project, a failing batch landed on another file system, its digest); the landing folder goes after."""
    cfg = small_project(tmp_path / "project")
    landing = Path(tempfile.mkdtemp(dir=OTHER_FILE_SYSTEM, prefix="garmentseg-landing-"))
    batch = landing / "b-bad"
    write_clean_batch(batch, GARMENTS, width=W, height=H, seed=3)
    inject_defects(batch)
    yield cfg, batch, tree_digest(batch)
    shutil.rmtree(landing, ignore_errors=True)


@on_another_file_system
def test_a_batch_landed_on_another_file_system_is_copied_verified_then_removed(failing_batch_elsewhere):
    cfg, batch, before = failing_batch_elsewhere
    killed = cfg.path(cfg.paths.quarantine_dir) / ".b-bad.staging-x1y2"  # a copy a kill cut short
    (killed / "raw").mkdir(parents=True)
    outcome = ingest_batch(batch, cfg)
    quarantine = cfg.path(cfg.paths.quarantine_dir)
    assert outcome.destination == quarantine / "b-bad" and not batch.exists()
    assert as_delivered(tree_digest(outcome.destination)) == before
    assert [p.name for p in quarantine.iterdir()] == ["b-bad"], "no staging folder is left behind"


@on_another_file_system
def test_a_failing_batch_on_a_read_only_share_is_quarantined_whole_with_its_report(
    failing_batch_elsewhere, monkeypatch
):
    """The landing folder is a share this node may read but not change: the quarantine gets every byte and
    the report, the delivery stays where it is, and the outcome is no traceback."""
    from garmentseg.validation import ingest

    cfg, batch, before = failing_batch_elsewhere
    removing = shutil.rmtree

    def read_only(path, *args, **kwargs):
        if Path(path) == batch:
            raise OSError(30, "Read-only file system", str(path))
        return removing(path, *args, **kwargs)

    monkeypatch.setattr(ingest.shutil, "rmtree", read_only)
    outcome = ingest_batch(batch, cfg)
    assert (outcome.status, outcome.destination) == (
        "quarantined",
        cfg.path(cfg.paths.quarantine_dir) / "b-bad",
    )
    assert as_delivered(tree_digest(outcome.destination)) == before and tree_digest(batch) == before
    assert (outcome.destination / "_report" / "findings.json").is_file()


def unreadable(cfg: Config, name: str) -> Path:
    """A folder of photos, not a batch: no raw/, no cutouts/."""
    folder = cfg.path(cfg.paths.landing_dir) / name
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "a.png").write_bytes(b"x")
    return folder


def test_unreadable_batch_is_left_alone(tmp_path):
    cfg = small_project(tmp_path / "project")
    folder = unreadable(cfg, "b-photos")
    result = CliRunner().invoke(main, ["ingest", str(folder), "--params", str(cfg.root / "params.yaml")])
    assert result.exit_code == 2 and result.output.startswith("unreadable:")
    assert (folder / "photos" / "a.png").read_bytes() == b"x"
    assert not cfg.path(cfg.paths.quarantine_dir).exists()


def test_a_folder_whose_name_cannot_be_a_batch_id_is_left_alone_with_how_to_fix_it(tmp_path):
    cfg = small_project(tmp_path / "project")
    folder = tmp_path / "landing" / "studio batch 01"
    write_clean_batch(folder, 1, width=W, height=H, seed=3)
    before = tree_digest(folder)
    result = CliRunner().invoke(main, ["ingest", str(folder), "--params", str(cfg.root / "params.yaml")])
    assert result.exit_code == 2 and result.output.startswith("unreadable:"), result.output
    assert "'studio batch 01' cannot name a batch" in result.output and "--batch-id" in result.output
    assert tree_digest(folder) == before, "left where it landed, untouched"
    assert not cfg.path(cfg.paths.quarantine_dir).exists()


def test_routes_follow_the_validation_verdict(tmp_path):
    cfg = small_project(tmp_path / "project")
    routes = {
        name: check_batch(batch, cfg)[1]
        for name, batch in (
            ("bad", landed(cfg, "b-bad", broken=True)),
            ("good", landed(cfg, "b-good", broken=False)),
            ("photos", unreadable(cfg, "b-photos")),
        )
    }
    assert {name: r.action for name, r in routes.items()} == {
        "bad": Action.QUARANTINE,
        "good": Action.INGEST,
        "photos": Action.LEAVE,
    }
    assert "b-photos" in routes["photos"].reason and "failed validation" in routes["bad"].reason


def test_dag_and_cli_agree_on_an_unreadable_batch(tmp_path, embedded_airflow: EmbeddedAirflow):
    """Both leave it where it landed; the DAG's validate task fails naming the folder, and the landing
    scan keeps listing it (its run id `batch__<id>` then exists, so it is not triggered again)."""
    cfg = small_project(tmp_path / "project")
    folder = unreadable(cfg, "b-photos")
    before = tree_digest(folder)
    cli = CliRunner().invoke(main, ["ingest", str(folder), "--params", str(cfg.root / "params.yaml")])
    assert cli.exit_code == 2 and tree_digest(folder) == before

    airflow = dataclasses.replace(embedded_airflow, params=cfg.root / "params.yaml")
    log = tmp_path / "garment_ingest.log"
    state = airflow.dags_test("garment_ingest", {"batch_id": "b-photos"}, log)
    output = log.read_text()
    assert state == "failed", output[-3000:]
    assert "AirflowFailException" in output and f"left where it landed: {folder}" in output
    assert str(folder) in cli.output.splitlines()[0]
    assert tree_digest(folder) == before
    assert not cfg.path(cfg.paths.quarantine_dir).exists()
    assert not (cfg.path(cfg.paths.data_dir) / "batches" / "b-photos").exists()
    assert tasks.new_landed_batches(cfg) == ["b-photos"]


@pytest.mark.slow
def test_passing_batch_is_ingested_once(project):
    batch = landed(project, "b-good", broken=False)
    before = tree_digest(batch)
    first = ingest_batch(batch, project)
    assert (first.status, first.exit_code, first.n_pairs) == ("ingested", 0, 6)
    assert first.destination == project.path(project.paths.data_dir) / "batches" / "b-good"
    assert as_delivered(tree_digest(first.destination)) == before and tree_digest(batch) == before
    assert (first.destination / INGEST_RECORD).is_file(), "when it entered the dataset, versioned with it"
    assert (project.path(project.paths.data_dir) / "batches" / "b-good.dvc").is_file()

    second = ingest_batch(batch, project)
    assert (second.status, second.exit_code) == ("already_ingested", 0)
    assert tree_digest(batch) == before
    shutil.rmtree(batch)


@pytest.mark.slow
def test_os_junk_beside_a_clean_delivery_is_left_out_of_the_dataset(project):
    batch = landed(project, "b-junk", broken=False)
    contract = tree_digest(batch)
    junk = os_junk_files(batch, [])
    outcome = ingest_batch(batch, project)
    assert (outcome.status, outcome.exit_code) == ("ingested", 0)
    findings = json.loads((outcome.report_dir / "findings.json").read_text())
    assert {f["file"] for f in findings if f["check"] == "os_junk"} == set(junk)
    assert as_delivered(tree_digest(outcome.destination)) == contract, (
        "exactly the delivery's shots and cutouts"
    )
    assert (batch / ".DS_Store").is_file(), "the landed folder is never touched"


def test_a_delivery_changed_after_validation_is_refused_and_the_dataset_is_untouched(project):
    """A studio still uploading: validation read one content, the folder holds another by the time it is
    admitted (here the DAG's two tasks, route then ingest). Only validated bytes may enter."""
    batch = landed(project, "b-uploading", broken=False)
    routed = tasks.route_landed_batch(project, "b-uploading")
    assert routed["action"] == Action.INGEST and routed["validated_digest"]
    late = sorted((batch / "cutouts").iterdir())[0]
    late.write_bytes(late.read_bytes()[:3000])  # the rest of the file is still on its way
    with pytest.raises(DatasetError, match="changed after validation read them"):
        tasks.ingest_landed_batch(project, routed)
    assert not (project.path(project.paths.data_dir) / "batches" / "b-uploading").exists()


def test_a_folder_of_the_dataset_itself_is_left_alone(project):
    """Ingesting the dataset's own batch would quarantine (move) it out of the dataset on any finding."""
    batch = landed(project, "b-good", broken=False)
    assert ingest_batch(batch, project).status == "ingested"
    own = project.path(project.paths.data_dir) / "batches" / "b-good"
    before = tree_digest(own)
    outcome = ingest_batch(own, project, batch_id="b-other")
    assert (outcome.status, outcome.exit_code) == ("unreadable", 2)
    assert "inside the dataset" in outcome.message and tree_digest(own) == before
    data = project.path(project.paths.data_dir)
    (data / "raw").mkdir()  # stray contract folders beside the dataset's: still not a delivery
    (data / "cutouts").mkdir()
    whole = ingest_batch(data, project, batch_id="b-data")
    assert (whole.status, whole.exit_code) == ("unreadable", 2) and "inside the dataset" in whole.message
    above = ingest_batch(project.root, project, batch_id="b-root")
    assert above.exit_code == 2 and "holds the dataset" in above.message
    assert (data / "index.parquet").is_file() and tree_digest(own) == before


def test_a_delivery_still_arriving_is_scanned_once_it_settles(tmp_path):
    """A studio uploading into the landing folder: scanned now, half a batch would go in and the rest be
    refused as other content. Nothing changed for `airflow.landing_settle_minutes`: it is scanned."""
    import os
    import time

    cfg = small_project(tmp_path / "project")
    cfg = cfg.model_copy(update={"airflow": cfg.airflow.model_copy(update={"landing_settle_minutes": 5})})
    batch = landed(cfg, "b-uploading", broken=False)
    assert tasks.new_landed_batches(cfg) == []
    later = time.time() + 6 * 60
    assert tasks.new_landed_batches(cfg, now=later) == ["b-uploading"]
    newest = sorted((batch / "cutouts").iterdir())[-1]
    os.utime(newest, (later, later))  # one more file arrives at that moment
    assert tasks.new_landed_batches(cfg, now=later) == []
    # a link to nowhere, and a studio clock a year ahead: neither keeps the batch waiting for ever
    (batch / "raw" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    ahead = time.time() + 365 * 86400
    for path in batch.rglob("*.png"):
        if not path.is_symlink():
            os.utime(path, (ahead, ahead))
    assert tasks.new_landed_batches(cfg, now=later + 6 * 60) == ["b-uploading"]

"""The whole loop with real engines on a tiny project: `garmentseg demo` (DVC, GX, Airflow executing
garment_ingest and garment_retrain, MLflow registry, BentoML), then a deliberately weak retrain that the
gate must reject while the champion stays. Slow: minutes on two cores."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from garmentseg.config import load_config
from garmentseg.orchestration.embedded import EmbeddedAirflow
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.slow(minutes=8)

# Small shots and a small model keep the real loop to minutes; the code path is the production one.
TINY = {
    "GARMENTSEG__SYNTH__GARMENTS": "8",
    "GARMENTSEG__SOURCES__STUDIO__WIDTH": "288",
    "GARMENTSEG__SOURCES__STUDIO__HEIGHT": "432",
    "GARMENTSEG__MODEL__INPUT_HEIGHT": "96",
    "GARMENTSEG__MODEL__INPUT_WIDTH": "64",
    "GARMENTSEG__TRAINING__EPOCHS": "12",
    "GARMENTSEG__TRAINING__BATCH_SIZE": "4",
    "GARMENTSEG__REGISTRY__DICE_FLOOR": "0.5",
}


def _project(tmp: Path) -> Path:
    """A fresh git + DVC project holding this repo's params, pipeline and DAGs (code via a symlink)."""
    project = tmp / "project"
    project.mkdir()
    for name in ("params.yaml", "dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "dags", project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (project / "src").symlink_to(ROOT / "src")
    (project / "data" / "batches").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    git = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], cwd=project, check=True)
    return project  # the DVC remote comes from params.yaml's paths.dvc_remote, into .dvc/config.local


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "GARMENTSEG"))}
    return {**env, **TINY, "GARMENTSEG_PARAMS": str(project / "params.yaml"), "GX_ANALYTICS_ENABLED": "False"}


def _garmentseg(project: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "garmentseg.cli", *args],
        cwd=project,
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    project = _project(tmp_path_factory.mktemp("e2e"))
    done = _garmentseg(project, "demo", "--params", str(project / "params.yaml"), "--batch-garments", "3")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Summary" in done.stdout and "gate decision" in done.stdout
    return project, json.loads((project / "var" / "demo" / "summary.json").read_text())


def test_demo_quarantines_the_broken_batch_with_its_report(demo_run) -> None:
    project, summary = demo_run
    outcomes = {name: o for name, o in summary["batches"].items()}
    good = next(o for name, o in outcomes.items() if name.startswith("studio-week"))
    broken = next(o for name, o in outcomes.items() if name.startswith("studio-broken"))
    assert good["status"] == "ingested" and Path(good["where"]).is_dir()
    assert broken["status"] == "quarantined" and broken["errors"] > 0
    quarantined = Path(broken["where"])
    assert (quarantined / "raw").is_dir() and list(quarantined.rglob("findings.json"))
    assert not (project / "var" / "landing" / quarantined.name).exists()
    findings = json.loads(next(quarantined.rglob("findings.json")).read_text())
    assert {f["severity"] for f in findings} >= {"error"} and all(
        f["file"] and f["message"] for f in findings
    )


def test_demo_registers_a_champion_with_lineage_and_serves_a_cutout(demo_run) -> None:
    _, summary = demo_run
    assert summary["retrain_state"] == "success"
    assert summary["gate"]["verdict"] == "pass" and summary["gate"]["mode"] == "bootstrap"
    tags = summary["champion"]["tags"]
    for key in ("run_id", "git_commit", "data_version", "dataset_digest", "profile", "threshold"):
        assert tags.get(key), f"champion lacks lineage tag {key}"
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"]), tags["git_commit"]  # never unknown or dirty
    assert tags["data_state"] == "clean", tags["data_state"]  # its data version is in the remote
    assert tags["data_md5.index.parquet"]
    assert summary["test_dice_median"] > 0.5
    from garmentseg.imageio import read_header

    header = read_header(Path(summary["cutout_png"]).read_bytes())
    assert (header.width, header.height, header.has_alpha) == (288, 432, True)


def test_demo_turns_the_review_loop_once(demo_run) -> None:
    project, summary = demo_run
    review = summary["review"]
    assert review["cut_out"] == 6  # two new garments, three views each, cut out by garment_review
    assert not [i for i in review["items"] if i["state"] in {"pending", "retouch"}]  # nothing left open
    assert len(review["items"]) == review["queued"]
    if review["queued"]:  # the corrections went in as a new data version and closed their items
        assert review["data_version_after"] != review["data_version_before"]
        assert {i["state"] for i in review["items"]} == {"closed"}
        assert "demo reviewer" in {i["decided_by"] for i in review["items"]}
        with sqlite3.connect(project / "var" / "airflow" / "airflow.db") as db:  # like any ingested batch
            sources = set(db.execute("SELECT source_dag_id, source_task_id FROM asset_event").fetchall())
        assert ("garment_review_import", "import_corrections") in sources
    listed = _garmentseg(project, "review", "list", "--json", "--params", str(project / "params.yaml"))
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert {i["id"]: i["state"] for i in json.loads(listed.stdout)["items"]} == {
        i["id"]: i["state"] for i in review["items"]
    }


def test_weaker_retrain_is_rejected_and_the_champion_stays(demo_run) -> None:
    project, summary = demo_run
    champion = summary["champion"]["version"]
    weak = {"profile": "demo", "overrides": {"training": {"epochs": 1, "learning_rate": 1e-7}}}
    airflow = EmbeddedAirflow.for_project(load_config(params_path=project / "params.yaml"))  # the demo's
    log = project / "var" / "weak-retrain.log"
    state = airflow.dags_test("garment_retrain", weak, log, env=airflow.env(base=_env(project)))
    assert state in ("success", "failed"), log.read_text()[-4000:]  # the run finished
    shown = _garmentseg(project, "registry", "show", "--json", "--params", str(project / "params.yaml"))
    state = json.loads(shown.stdout)
    assert state["champion"]["version"] == champion
    latest = state["decisions"][0]
    assert latest["verdict"] == "reject" and latest["champion_version"] == champion
    assert latest["candidate_score"] < latest["champion_score"]
    stopped = state["promotions"][-1]  # the stop is in the promotion log, with the champion that stayed
    assert (stopped["action"], stopped["candidate_version"], stopped["to_version"]) == (
        "stop",
        latest["candidate_version"],
        champion,
    )

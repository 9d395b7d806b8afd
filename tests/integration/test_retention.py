"""Retention on real engines: a DVC project with a remote (a local folder, then moto's S3 server), three
published data versions, a SQLite MLflow registry whose one model version names the first; `garmentseg gc`
dry-run, then for real, then a fresh project checks the kept versions out of the remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from garmentseg.config import Config, load_config
from garmentseg.data import plane, store, versioning
from garmentseg.data.synth import synthesize
from garmentseg.retention.cli import gc_cmd
from garmentseg.retention.plan import gc
from tests.integration.conftest import ROOT
from tests.integration.test_data_plane import BUCKET, MOTO_KEYS, s3  # noqa: F401 - s3 is a fixture

DAY = 86400


def _project(root: Path, remote: str) -> Config:
    """A git + DVC project whose params.yaml points at `remote` and a SQLite registry, with short retention."""
    root.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"]["dvc_remote"] = str(remote)
    params["registry"].update(
        tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_root=str(root / "artifacts")
    )
    params["retention"].update(
        landed_days=0, quarantine_days=30, reports_days=30, mlflow_run_days=30, data_version_days=0
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.dvc(["init", "--quiet"], root)
    return load_config("demo", root / "params.yaml")


def _age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    for p in [path, *path.rglob("*")]:
        os.utime(p, (stamp, stamp))


def _run(client, experiment_id: str, days_ago: float, data_version: str) -> str:
    start = int((time.time() - days_ago * DAY) * 1000)
    run = client.create_run(experiment_id, start_time=start, tags={"data_version": data_version})
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    client.set_terminated(run.info.run_id, end_time=start + 1000)
    return run.info.run_id


@pytest.fixture(scope="module", params=["local", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DVC remote: a local folder, or a bucket on moto's S3 server (the endpoint and keys in the env)."""
    if request.param == "local":
        yield str(tmp_path_factory.mktemp("remote"))
        return
    endpoint = request.getfixturevalue("s3")
    with pytest.MonkeyPatch.context() as env:
        for key, value in {**MOTO_KEYS, "GARMENTSEG_S3_ENDPOINT_URL": endpoint}.items():
            env.setenv(key, value)
        yield f"s3://{BUCKET}/retention"


@pytest.fixture(scope="module")
def world(remote: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("retention")
    cfg = _project(base / "proj", remote)
    landing = cfg.path(cfg.paths.landing_dir)
    versions = []
    for i, seed in enumerate((11, 12, 13), start=1):
        batch = synthesize(landing / f"b-{i}", 2, seed, cfg, workers=1, width=96, height=144).out_dir
        (batch / ".DS_Store").write_bytes(b"junk")  # never delivered: does not hold the folder back
        versions.append(plane.add_batch(batch, cfg).data_version)
    (landing / "b-2" / "raw" / "b-2-extra_Front.png").write_bytes(b"\x89PNG retouched after ingest")
    synthesize(landing / "b-waiting", 1, 14, cfg, workers=1, width=96, height=144)  # never ingested

    quarantine = cfg.path(cfg.paths.quarantine_dir)
    for name, days in (("q-old", 60), ("q-new", 2)):
        (quarantine / name / "raw").mkdir(parents=True)
        (quarantine / name / "raw" / "x.png").write_bytes(b"x")
        _age(quarantine / name, days)
    reports = cfg.path(cfg.paths.reports_dir)
    for rel, days in (
        ("b-old", 60),
        ("b-new", 2),
        (f"training-set/{versions[0]}", 60),  # the registered version's: protected
        (f"training-set/{versions[1]}", 60),
        ("data_docs", 60),  # the Data Docs site: never a per-run report
    ):
        (reports / rel).mkdir(parents=True)
        (reports / rel / "summary.json").write_text(json.dumps({"passed": False}))
        _age(reports / rel, days)

    from mlflow import MlflowClient

    from garmentseg.training import ensure_experiment

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a previous world's, exported by mlflow.set_tracking_uri
    experiment_id = ensure_experiment(cfg)
    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    runs = {
        "champion": _run(client, experiment_id, 90, versions[0]),
        "old": _run(client, experiment_id, 90, versions[1]),
        "recent": _run(client, experiment_id, 3, versions[2]),
    }
    name = cfg.registry.model_name
    client.create_registered_model(name)
    md5s = {f"data_md5.{k}": v.md5 for k, v in store.manifest(cfg, versions[0]).items()}
    mv = client.create_model_version(
        name,
        f"runs:/{runs['champion']}/model",
        run_id=runs["champion"],
        tags={"data_version": versions[0], **md5s},
    )
    client.set_registered_model_alias(name, "champion", mv.version)
    return {"cfg": cfg, "versions": versions, "runs": runs, "remote": remote}


def _targets(summary: dict, key: str, kind: str) -> set[str]:
    return {i["target"] for i in summary[key] if i["kind"] == kind}


def test_dry_run_lists_what_would_go_and_why_and_deletes_nothing(world) -> None:
    cfg, (v1, v2, v3) = world["cfg"], world["versions"]
    result = CliRunner().invoke(gc_cmd, ["--dry-run", "--json", "--params", str(cfg.root / "params.yaml")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    landing, quarantine = cfg.path(cfg.paths.landing_dir), cfg.path(cfg.paths.quarantine_dir)
    reports = cfg.path(cfg.paths.reports_dir)

    assert summary["dry_run"] and summary["protected"]["data_versions"] == [v1]
    assert _targets(summary, "would_remove", "landed") == {str(landing / "b-1"), str(landing / "b-3")}
    notes = " | ".join(summary["notes"])
    assert "landed b-2 kept: raw/b-2-extra_Front.png is not in" in notes
    assert "landed b-waiting kept: not in the dataset" in notes
    assert _targets(summary, "would_remove", "quarantine") == {str(quarantine / "q-old")}
    assert _targets(summary, "would_remove", "report") == {
        str(reports / "b-old"),
        str(reports / "training-set" / v2),
    }
    assert _targets(summary, "would_remove", "mlflow-run") == {world["runs"]["old"]}
    manifests = _targets(summary, "would_remove", "dvc-manifest")
    assert [Path(m).name for m in manifests] == [f"{v2}.json"], summary[
        "notes"
    ]  # v1 registered, v3 the tree's
    v2_index = store.manifest(cfg, v2)["index.parquet"].md5
    assert v2_index in _targets(summary, "would_remove", "dvc-remote-object")
    assert v2_index in _targets(summary, "would_remove", "dvc-cache-object")
    kept = {e.md5 for v in (v1, v3) for e in store.manifest(cfg, v).values()}
    assert not kept & _targets(summary, "would_remove", "dvc-remote-object")
    # nothing went
    assert (landing / "b-1").is_dir() and (quarantine / "q-old").is_dir() and (reports / "b-old").is_dir()
    assert store.manifest(cfg, v2) is not None

    text = CliRunner().invoke(gc_cmd, ["--dry-run", "--params", str(cfg.root / "params.yaml")]).output
    assert "would remove" in text and "dvc-manifest: 1" in text and f"data versions {v1}" in text


def test_a_mistyped_tracking_uri_collects_nothing(world, tmp_path, monkeypatch) -> None:
    """An empty registry (a typo in the URI opens a fresh SQLite store) protects nothing: gc refuses."""
    cfg, (v1, _v2, _v3) = world["cfg"], world["versions"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlfow.db")
    result = CliRunner().invoke(gc_cmd, ["--json", "--params", str(cfg.root / "params.yaml")])
    assert result.exit_code == 2 and "holds no version of model" in result.output, result.output
    assert store.manifest(cfg, v1) is not None


def test_a_data_version_another_node_just_published_is_kept_with_its_objects(world) -> None:
    """No registered model names v2 and it is not this tree's: another node may have pushed it an hour ago
    and be training on it. Within `retention.data_version_days` neither its manifest nor its objects go."""
    cfg, (_v1, v2, _v3) = world["cfg"], world["versions"]
    patient = cfg.model_copy(update={"retention": cfg.retention.model_copy(update={"data_version_days": 1})})
    pushing = None
    if not world["remote"].startswith("s3://"):  # an object a publish has just pushed, its manifest to come
        pushing = Path(world["remote"]) / "files" / "md5" / "00" / ("0" * 30)
        pushing.parent.mkdir(parents=True, exist_ok=True)
        pushing.write_bytes(b"a shot on its way")
    summary = gc(patient, dry_run=True)
    if pushing:
        assert not {t for t in _targets(summary, "would_remove", "dvc-remote-object") if t.startswith("00")}
        pushing.unlink()
    assert not _targets(summary, "would_remove", "dvc-manifest"), summary["would_remove"]
    v2_objects = {e.md5 for e in store.manifest(cfg, v2).values()}
    assert not v2_objects & _targets(summary, "would_remove", "dvc-remote-object")
    a_week_on = gc(
        patient, dry_run=True, now=datetime.now(UTC) + timedelta(days=7)
    )  # the remote's clock read
    assert [Path(m).name for m in _targets(a_week_on, "would_remove", "dvc-manifest")] == [f"{v2}.json"]


def test_gc_removes_the_plan_and_every_registered_version_still_checks_out(world, tmp_path) -> None:
    from mlflow import MlflowClient

    cfg, (v1, v2, v3), runs = world["cfg"], world["versions"], world["runs"]
    summary = gc(cfg, dry_run=False)
    assert summary["totals"]["dvc-manifest"]["count"] == 1
    landing = cfg.path(cfg.paths.landing_dir)
    assert not (landing / "b-1").exists() and (landing / "b-2").is_dir() and (landing / "b-waiting").is_dir()
    assert not (cfg.path(cfg.paths.quarantine_dir) / "q-old").exists()
    assert (cfg.path(cfg.paths.reports_dir) / "training-set" / v1).is_dir()
    assert (cfg.path(cfg.paths.reports_dir) / "data_docs").is_dir()

    client = MlflowClient(cfg.tracking_uri)
    assert client.get_run(runs["old"]).info.lifecycle_stage == "deleted"
    assert client.list_artifacts(runs["old"]) == []
    assert client.get_run(runs["champion"]).info.lifecycle_stage == "active"
    assert client.get_run(runs["recent"]).info.lifecycle_stage == "active"

    assert store.manifest(cfg, v2) is None
    # a fresh machine, sharing only the remote, rebuilds the registered version and the current one
    for version in (v1, v3):
        fresh = _project(tmp_path / version, world["remote"])
        assert plane.checkout(fresh, version).data_version == version
        shutil.rmtree(tmp_path / version)
    with pytest.raises(plane.DatasetError, match="not in the DVC remote"):
        plane.checkout(_project(tmp_path / "v2", world["remote"]), v2)
    with pytest.raises(plane.DatasetError, match="is not a data version"):  # no path out of the manifests
        plane.checkout(cfg, f"../versions/{v1}")

    assert gc(cfg, dry_run=True)["would_remove"] == []  # what is left is what the policy keeps

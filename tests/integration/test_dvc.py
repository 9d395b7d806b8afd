"""The dataset under real DVC: `dvc repro` of synth -> index, add_batch, push/pull, rollback.

Each test runs in its own temporary git + DVC project with a local remote; the project's own data/ is
never touched.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from garmentseg.config import Config, load_config
from garmentseg.data import store, versioning
from garmentseg.data.index import INDEX_FILE, INGEST_RECORD, read_index
from garmentseg.data.plane import DatasetError, add_batch, pull, version_info
from garmentseg.data.synth import synthesize

pytestmark = pytest.mark.slow  # real DVC subprocesses: ~10 s a test on a small machine

ROOT = Path(__file__).resolve().parents[2]
DATA_STAGES = ("synth", "index")


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def seeded_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project with the real data stages, a 1-garment demo, `dvc repro` done once."""
    root = tmp_path_factory.mktemp("project") / "proj"
    (root / "data" / "batches").mkdir(parents=True)
    (root / "data" / "batches" / ".gitkeep").touch()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["demo"]["synth"]["garments"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in DATA_STAGES}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    for stage in pipeline["stages"].values():
        for dep in stage.get("deps", []):
            if dep.startswith("src/") and (ROOT / dep).is_dir():
                shutil.copytree(ROOT / dep, root / dep, ignore=shutil.ignore_patterns("__pycache__"))
            elif dep.startswith("src/"):
                (root / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / dep, root / dep)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.init(root, "var/dvc-remote")
    versioning.dvc(["repro", "--quiet"], root)
    return root


@pytest.fixture
def project(seeded_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    root = shutil.copytree(seeded_project, tmp_path / "proj", symlinks=True)
    monkeypatch.delenv("GARMENTSEG_PARAMS", raising=False)
    monkeypatch.delenv("GARMENTSEG_PROFILE", raising=False)
    return load_config("demo", root / "params.yaml")


@pytest.fixture(scope="module")
def incoming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small batch as a studio would drop it (full contract, tiny images)."""
    cfg = load_config("demo", ROOT / "params.yaml")
    out = tmp_path_factory.mktemp("landing") / "batch-001"
    return synthesize(out, 2, 101, cfg, workers=1, width=96, height=144).out_dir


def test_repro_rebuilds_the_demo_bit_for_bit(project: Config) -> None:
    root = project.root
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert versioning.status(root) == {}
    shutil.rmtree(root / "data" / "synth" / "demo")
    (root / "data" / INDEX_FILE).unlink()
    shutil.rmtree(root / ".dvc" / "cache")
    versioning.dvc(["repro", "--force", "--quiet"], root)
    again = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for stage in DATA_STAGES:
        assert again[stage]["outs"] == lock[stage]["outs"], stage


def test_add_batch_push_pull_round_trip(project: Config, incoming: Path) -> None:
    root, data = project.root, project.path(project.paths.data_dir)
    source_before = _digests(incoming)
    before = read_index(data / INDEX_FILE)
    result = add_batch(incoming, project, push=True)
    assert not result.already_present and result.n_pairs == 6
    assert result.dataset_path == data / "batches" / "batch-001"
    assert _digests(incoming) == source_before, "the input folder is never modified"
    assert (data / "batches" / "batch-001.dvc").is_file()
    index = read_index(data / INDEX_FILE)
    assert set(index["batch_id"]) == {"synth/demo", "batch-001"}
    kept = index.merge(before, on=["garment_id", "view"], suffixes=("", "_before"))
    assert len(kept) == len(before) and (kept["split"] == kept["split_before"]).all()
    assert result.data_version == versioning.data_version(project) != "empty"
    assert versioning.status(root) == {}, "pipeline and batch records are up to date, no overlaps"
    assert versioning.status(root, cloud=True) == {}, "everything is on the remote"
    info = version_info(project)
    assert info["data_state"] == "clean"
    assert "data/batches/batch-001" in info["dvc"] and "data/index.parquet" in info["dvc"]

    ingested = _digests(data / "batches" / "batch-001")
    assert {k: v for k, v in ingested.items() if k != INGEST_RECORD} == source_before
    shutil.rmtree(data / "batches" / "batch-001")
    shutil.rmtree(root / ".dvc" / "cache")
    pull(project)
    assert _digests(data / "batches" / "batch-001") == ingested, "the delivery and its ingest record"


def test_add_batch_is_idempotent(project: Config, incoming: Path) -> None:
    first = add_batch(incoming, project)
    index_bytes = (project.path(project.paths.data_dir) / INDEX_FILE).read_bytes()
    lock = (project.root / "dvc.lock").read_text()
    again = add_batch(incoming, project)
    assert again.already_present and again.data_version == first.data_version
    assert (project.path(project.paths.data_dir) / INDEX_FILE).read_bytes() == index_bytes
    assert (project.root / "dvc.lock").read_text() == lock


def test_same_id_other_content_is_refused(project: Config, incoming: Path, tmp_path: Path) -> None:
    add_batch(incoming, project)
    other = shutil.copytree(incoming, tmp_path / "batch-001")
    (other / "garments.csv").write_text("garment_id,garment_type,difficulty\n")
    with pytest.raises(DatasetError, match="immutable"):
        add_batch(other, project)


def test_failed_push_rolls_back(project: Config, incoming: Path) -> None:
    root, data = project.root, project.path(project.paths.data_dir)
    watched = [data / INDEX_FILE, root / "dvc.lock", data / "batches" / ".gitignore"]
    before = {p: p.read_bytes() if p.exists() else None for p in watched}
    (root / "var").mkdir(exist_ok=True)
    (root / "var" / "dvc-remote").write_text("a file where the remote folder should be")
    with pytest.raises(store.StoreError, match=f"{root / 'var' / 'dvc-remote'}.*unreachable"):
        add_batch(incoming, project, push=True)
    assert not (data / "batches" / "batch-001").exists()
    assert not (data / "batches" / "batch-001.dvc").exists()
    assert not [p for p in (data / "batches").iterdir() if p.name.endswith(".staging")]
    assert {p: p.read_bytes() if p.exists() else None for p in watched} == before
    assert versioning.status(root) == {}

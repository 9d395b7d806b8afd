"""The data plane across machines: fresh git clones of a project that share nothing but an S3 remote (moto's
S3 server, started here) add a batch and check a data version out byte for byte; an unreachable remote
fails the add by name and leaves the dataset as it was; an add, an ingest (GX validation first) and a
quarantine killed with SIGKILL at several points are completed by their retry; the image's layout (a DVC
project without git) adds and checks out.

Every command is the real `garmentseg` CLI in a subprocess, as a node would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from garmentseg.config import load_config
from garmentseg.data import plane, versioning
from garmentseg.data.index import INDEX_FILE, INGEST_RECORD, read_index
from garmentseg.data.synth import synthesize
from garmentseg.deploy import free_port

# real DVC and S3 over HTTP: a few seconds a command on a small machine
pytestmark = pytest.mark.slow(minutes=7)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "garmentseg-data"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
MOTO_KEYS = {  # moto's server takes any keys: these are not credentials
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _tree(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under folder."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _delivered(batch: Path) -> dict[str, str]:
    """_tree of an ingested batch without its ingest record: what the delivery itself brought."""
    return {k: v for k, v in _tree(batch).items() if k != INGEST_RECORD}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port with one bucket; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        session = boto3.Session(
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=MOTO_KEYS["AWS_DEFAULT_REGION"],
        )
        session.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project as git holds it: params.yaml, the data stages of dvc.yaml and their code, the tracked
    .dvc/config (no remote in it); no data, no DVC cache, no dvc.lock."""
    root = tmp_path_factory.mktemp("origin") / "proj"
    (root / "data" / "batches").mkdir(parents=True)
    (root / "data" / "batches" / ".gitkeep").touch()
    shutil.copyfile(ROOT / "params.yaml", root / "params.yaml")
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in ("synth", "index")}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    shutil.copytree(ROOT / "src" / "garmentseg" / "data", root / "src" / "garmentseg" / "data")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.dvc(["init", "--quiet"], root)
    shutil.copyfile(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copyfile(ROOT / ".dvcignore", root / ".dvcignore")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "project"], cwd=root, check=True)
    return root


def _batch(folder: Path, seed: int) -> Path:
    """A small clean batch as a studio drops it (tiny images)."""
    cfg = load_config("demo", ROOT / "params.yaml")
    return synthesize(folder, 2, seed, cfg, workers=1, width=96, height=144).out_dir


@pytest.fixture(scope="module")
def incoming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _batch(tmp_path_factory.mktemp("landing") / "b-0001", 101)


def _clone(origin: Path, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True)
    return dest


def _env(endpoint: str, remote: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GARMENTSEG__PATHS__DVC_REMOTE": remote,
        "GARMENTSEG_S3_ENDPOINT_URL": endpoint,
        **MOTO_KEYS,
        "GARMENTSEG_PROFILE": "demo",
    }


def _garmentseg(clone: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "garmentseg"), *args, "--params", str(clone / "params.yaml")]
    return subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=300)


def test_two_clones_share_a_data_version_through_s3_only(
    s3: str, origin: Path, incoming: Path, tmp_path: Path
) -> None:
    env = _env(s3, f"s3://{BUCKET}/two-clones")
    ingester = _clone(origin, tmp_path / "ingester")
    worker = _clone(origin, tmp_path / "worker")

    added = _garmentseg(ingester, env, "data", "add", str(incoming))  # a fresh clone, no prior command
    assert added.returncode == 0, added.stderr
    version = re.search(r"data version (\w+)", added.stdout).group(1)
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/batches/b-0001"], cwd=ingester)
    assert ignored.returncode == 0, "git ignores the batch itself"
    config = (ingester / ".dvc" / "config").read_text()
    assert "s3://" not in config and "s3://" in (ingester / ".dvc" / "config.local").read_text()

    started = time.monotonic()
    out = _garmentseg(worker, env, "data", "checkout", version)
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert _tree(worker / "data" / "batches" / "b-0001") == _tree(ingester / "data" / "batches" / "b-0001")
    assert (worker / "data" / INDEX_FILE).read_bytes() == (ingester / "data" / INDEX_FILE).read_bytes()
    assert (worker / "data" / "batches" / "b-0001.dvc").read_text() == (
        ingester / "data" / "batches" / "b-0001.dvc"
    ).read_text()
    assert _delivered(worker / "data" / "batches" / "b-0001") == _tree(incoming)
    print(f"checkout of {version} on a fresh clone: {seconds:.1f}s (command included)")

    shown = _garmentseg(worker, env, "data", "version")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["data_version"] == version and info["data_state"] == "clean", info
    assert set(info["dvc"]) == {"data/index.parquet", "data/batches/b-0001"}
    assert info["git_commit"] != "unknown"

    missing = _garmentseg(worker, env, "data", "checkout", "0123456789ab")
    assert missing.returncode == 1 and f"s3://{BUCKET}/two-clones" in missing.stderr
    assert _garmentseg(worker, env, "data", "push").returncode == 0, "publishing again is a no-op"
    shutil.rmtree(worker / "data" / "batches" / "b-0001")
    pulled = _garmentseg(worker, env, "data", "pull")  # a worker holding the index gets the rest
    assert pulled.returncode == 0 and version in pulled.stdout, pulled.stderr
    assert _delivered(worker / "data" / "batches" / "b-0001") == _tree(incoming)

    # The other way round, and back: the worker adds a batch, the ingester follows, then returns to v1.
    second = _garmentseg(worker, env, "data", "add", str(_batch(tmp_path / "landing" / "b-0002", 202)))
    assert second.returncode == 0, second.stderr
    version2 = re.search(r"data version (\w+)", second.stdout).group(1)
    assert version2 != version
    assert _garmentseg(ingester, env, "data", "checkout", version2).returncode == 0
    assert _tree(ingester / "data") == _tree(worker / "data"), "every byte, pointers included"
    back = _garmentseg(ingester, env, "data", "checkout", version)
    assert back.returncode == 0, back.stderr
    assert json.loads(_garmentseg(ingester, env, "data", "version").stdout)["data_version"] == version


def test_a_worker_materialises_the_runs_data_version(
    s3: str, origin: Path, incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain's train task on another machine (its own clone, nothing shared but the remote)."""
    env = _env(s3, f"s3://{BUCKET}/worker")
    added = _garmentseg(_clone(origin, tmp_path / "scheduler"), env, "data", "add", str(incoming))
    assert added.returncode == 0, added.stderr
    version = re.search(r"data version (\w+)", added.stdout).group(1)
    worker = _clone(origin, tmp_path / "gpu-worker")
    for key in ("GARMENTSEG__PATHS__DVC_REMOTE", "GARMENTSEG_S3_ENDPOINT_URL", *MOTO_KEYS):
        monkeypatch.setenv(key, env[key])
    cfg = load_config("demo", worker / "params.yaml")
    assert plane.materialise(cfg, version), "a fresh worker checks the version out"
    assert _delivered(worker / "data" / "batches" / "b-0001") == _tree(incoming)
    assert versioning.data_version(cfg) == version
    assert not plane.materialise(cfg, version), "a worker that holds it does nothing"
    shots = sorted((worker / "data" / "batches" / "b-0001" / "raw").iterdir())
    for shot in shots[1:]:  # a checkout killed midway: the folder is there with one shot of many
        shot.unlink()
    assert plane.materialise(cfg, version), "a worker missing files of its version checks it out again"
    assert _delivered(worker / "data" / "batches" / "b-0001") == _tree(incoming)


def test_a_dvc_failure_carries_dvcs_own_message(origin: Path, tmp_path: Path) -> None:
    """The fresh-clone failure used to read "`dvc commit --force --quiet index` failed ... (exit 1):"."""
    from garmentseg.data import store

    clone = _clone(origin, tmp_path / "clone")
    cfg = load_config("demo", clone / "params.yaml")
    with pytest.raises(versioning.DvcError, match="dependency 'data/synth/demo' does not exist"):
        store.record_stage(cfg, "index")


def test_unreachable_remote_fails_the_add_by_name(origin: Path, incoming: Path, tmp_path: Path) -> None:
    clone = _clone(origin, tmp_path / "clone")
    before = _tree(clone / "data")
    env = {**_env(f"http://127.0.0.1:{free_port()}", f"s3://{BUCKET}/nowhere"), "AWS_MAX_ATTEMPTS": "1"}
    out = _garmentseg(clone, env, "data", "add", str(incoming))
    assert out.returncode == 1
    assert f"s3://{BUCKET}/nowhere" in out.stderr and "unreachable" in out.stderr, out.stderr
    assert _tree(clone / "data") == before, "the dataset is as it was"
    assert not [p for p in (clone / "data" / "batches").iterdir() if p.name != ".gitkeep"]


def _as_in_the_image(folder: Path) -> Path:
    """A project laid out as the image lays out /app: params.yaml, no git, DVC initialised by the
    Dockerfile's own commands."""
    from tests.infra.infra_files import dockerfile

    folder.mkdir(parents=True)
    shutil.copyfile(ROOT / "params.yaml", folder / "params.yaml")
    (init,) = [args for instr, args in dockerfile() if instr == "RUN" and "dvc init" in args]
    for command in init.split("&&"):
        words = shlex.split(command)
        if words[0].endswith("/dvc"):
            subprocess.run([str(BIN / "dvc"), *words[1:]], cwd=folder, check=True)
    return folder


def test_the_images_dvc_project_without_git_adds_and_checks_out(
    s3: str, incoming: Path, tmp_path: Path
) -> None:
    """An ingesting worker and a training pod as the image runs them: no .git, the commit baked in."""
    env = {**_env(s3, f"s3://{BUCKET}/image"), "GARMENTSEG_GIT_COMMIT": "0" * 40}
    worker = _as_in_the_image(tmp_path / "worker")
    assert not (worker / ".git").exists() and (worker / ".dvc").is_dir()
    added = _garmentseg(worker, env, "data", "add", str(incoming))
    assert added.returncode == 0, added.stderr
    version = re.search(r"data version (\w+)", added.stdout).group(1)
    pod = _as_in_the_image(tmp_path / "pod")
    out = _garmentseg(pod, env, "data", "checkout", version)
    assert out.returncode == 0, out.stderr
    assert _delivered(pod / "data" / "batches" / "b-0001") == _tree(incoming)
    info = json.loads(_garmentseg(pod, env, "data", "version").stdout)
    assert (info["data_version"], info["data_state"]) == (version, "clean")
    assert info["git_commit"] == env["GARMENTSEG_GIT_COMMIT"], "the commit baked into the image"


# ---------------------------------------------------------------------------------- kill and retry
@pytest.fixture(scope="module")
def seeded(origin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone that ran the data stages (synth -> index): the index stage is recorded in dvc.lock."""
    root = _clone(origin, tmp_path_factory.mktemp("seeded") / "proj")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profiles"]["demo"]["synth"]["garments"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        versioning.init(root, "var/dvc-remote")
        versioning.dvc(["repro", "--quiet"], root)
    return root


def _killed(root: Path, env: dict[str, str], marker: str, *args: str) -> int:
    """Run `garmentseg ARGS` and SIGKILL its process group once stderr shows MARKER."""
    env = {**env, "GARMENTSEG_LOG_LEVEL": "INFO"}
    cmd = [str(BIN / "garmentseg"), *args, "--params", str(root / "params.yaml")]
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in proc.stderr:
        if re.search(marker, line):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=300)
    proc.stderr.close()
    return proc.returncode


def _assert_added_once(root: Path, incoming: Path, version: str) -> None:
    """After a retry: b-0001 in the index once, its bytes and pointer in place, no staging, DVC clean
    locally and against the remote, and the version's manifest published."""
    data = root / "data"
    index = read_index(data / INDEX_FILE)
    assert (index["batch_id"] == "b-0001").sum() == 6, "the batch is in the index once"
    assert _delivered(data / "batches" / "b-0001") == _tree(incoming)
    assert (data / "batches" / "b-0001.dvc").is_file()
    assert not [p for p in (data / "batches").iterdir() if p.name.endswith(".staging")], "no staging left"
    assert versioning.status(root) == {}, "DVC's records match the tree"
    assert versioning.status(root, cloud=True) == {}, "every tracked object is on the remote"
    assert (root / "var" / "dvc-remote" / "garmentseg" / "versions" / f"{version}.json").is_file()


@pytest.mark.parametrize("marker", ["copied to", "batch b-0001: indexed", "tracked: ", "pushed to"])
def test_add_killed_then_retried_ends_consistent(
    seeded: Path, incoming: Path, tmp_path: Path, marker: str
) -> None:
    root = shutil.copytree(seeded, tmp_path / "proj", symlinks=True)
    assert _killed(root, _env("", "var/dvc-remote"), marker, "data", "add", str(incoming)) == -signal.SIGKILL
    data = root / "data"
    killed = {
        "copied": (data / "batches" / "b-0001").is_dir(),
        "indexed": "b-0001" in set(read_index(data / INDEX_FILE)["batch_id"]),
        "pointer": (data / "batches" / "b-0001.dvc").is_file(),
        "manifests": len(list((root / "var" / "dvc-remote").glob("garmentseg/versions/*.json"))),
    }
    print(f"killed after {marker!r}: {killed}")
    (data / "batches" / ".b-0001.x1y2.staging" / "raw").mkdir(parents=True)  # as a kill mid-copy leaves it

    env = _env("", "var/dvc-remote")
    retry = _garmentseg(root, env, "data", "add", str(incoming))
    assert retry.returncode == 0, retry.stderr
    if marker in ("copied to", "batch b-0001: indexed"):
        assert "b-0001 added" in retry.stdout, "the retry completes the batch, never 'already present'"
    version = re.search(r"data version (\w+)", retry.stdout).group(1)

    _assert_added_once(root, incoming, version)
    again = _garmentseg(root, env, "data", "add", str(incoming))
    assert again.returncode == 0 and "already present" in again.stdout, again.stdout + again.stderr


def test_an_add_killed_before_tracking_does_not_block_a_corrected_redelivery(
    seeded: Path, incoming: Path, tmp_path: Path
) -> None:
    """The killed add copied the first delivery into place but never tracked it: it is in no data version,
    so the corrected delivery under the same id replaces it (the first one is still where it landed)."""
    root = shutil.copytree(seeded, tmp_path / "proj", symlinks=True)
    leftover = shutil.copytree(incoming, root / "data" / "batches" / "b-0001")
    first_shot = sorted((leftover / "raw").iterdir())[0]
    first_shot.write_bytes(first_shot.read_bytes() + b"the first delivery's bytes")
    retry = _garmentseg(root, _env("", "var/dvc-remote"), "data", "add", str(incoming))
    assert retry.returncode == 0 and "b-0001 added" in retry.stdout, retry.stdout + retry.stderr
    _assert_added_once(root, incoming, re.search(r"data version (\w+)", retry.stdout).group(1))


def _ingest_env() -> dict[str, str]:
    """The local remote, and the studio contract at the tiny batches' size, so that they pass validation."""
    return {
        **_env("", "var/dvc-remote"),
        "GARMENTSEG__SOURCES__STUDIO__WIDTH": "96",
        "GARMENTSEG__SOURCES__STUDIO__HEIGHT": "144",
        "GX_ANALYTICS_ENABLED": "False",
    }


def _whole_report(folder: Path, passed: bool) -> None:
    """A validation report with every file, its summary saying PASSED, no temporary file left."""
    names = {p.name for p in folder.iterdir()}
    assert {"findings.json", "summary.json", "metadata.parquet", "gallery.html"} <= names, names
    assert not [n for n in names if n.endswith(".tmp")], names
    assert json.loads((folder / "summary.json").read_text())["passed"] is passed


@pytest.mark.parametrize(
    "marker",
    [
        r"read \d+ files",  # validation under way: the GX suite has not run
        r"Data Docs pages point at",  # the report is being written
        r"batch b-0001 added",  # the data plane is done; ingest has not reported
    ],
)
def test_ingest_killed_then_retried_ends_consistent(
    seeded: Path, incoming: Path, tmp_path: Path, marker: str
) -> None:
    """`garmentseg ingest` (GX validation, then the data plane) at the points `data add` does not have."""
    root = shutil.copytree(seeded, tmp_path / "proj", symlinks=True)
    env = _ingest_env()
    assert _killed(root, env, marker, "ingest", str(incoming)) == -signal.SIGKILL
    report = root / "var" / "reports" / "b-0001"
    print(f"killed after {marker!r}: report {sorted(p.name for p in report.iterdir())}")

    retry = _garmentseg(root, env, "ingest", str(incoming))
    assert retry.returncode == 0, retry.stdout + retry.stderr
    if marker != r"batch b-0001 added":
        assert retry.stdout.startswith("ingested: "), "the retry ingests, never 'already ingested'"
    version = re.search(r"data version (\w+)", retry.stdout).group(1)
    _assert_added_once(root, incoming, version)
    _whole_report(report, passed=True)
    assert not (root / "var" / "quarantine").exists()


@pytest.mark.parametrize(
    "marker",
    [
        r"batch b-0002: failed with \d+ errors",  # the report is written; the batch has not moved
        r"batch b-0002: moved to",  # moved to quarantine; its report not yet beside it
    ],
)
def test_quarantine_killed_then_retried_ends_consistent(seeded: Path, tmp_path: Path, marker: str) -> None:
    root = shutil.copytree(seeded, tmp_path / "proj", symlinks=True)
    env = _ingest_env()
    cfg = load_config("demo", ROOT / "params.yaml")
    landed = synthesize(tmp_path / "landing" / "b-0002", 1, 7, cfg, workers=1, width=64, height=96).out_dir
    delivered = _tree(landed)
    index_before = (root / "data" / INDEX_FILE).read_bytes()
    assert _killed(root, env, marker, "ingest", str(landed)) == -signal.SIGKILL
    quarantine = root / "var" / "quarantine"
    kept = sorted(p.relative_to(quarantine).as_posix() for p in quarantine.rglob("*") if p.is_file())
    print(f"killed after {marker!r}: landed {landed.exists()}, quarantine {kept}")

    retry = _garmentseg(root, env, "ingest", str(landed))
    assert retry.returncode == 1 and retry.stdout.startswith("quarantined: "), retry.stdout + retry.stderr
    assert not landed.exists(), "the batch left the landing folder"
    assert [p.name for p in quarantine.iterdir()] == ["b-0002"], "quarantined once"
    moved = quarantine / "b-0002"
    assert {k: v for k, v in _tree(moved).items() if not k.startswith("_report/")} == delivered
    _whole_report(moved / "_report", passed=False)
    assert (moved / "_report" / "README.txt").read_text().startswith("Batch b-0002 failed validation")
    assert (root / "data" / INDEX_FILE).read_bytes() == index_before, "the dataset is as it was"


# ------------------------------------------------------------------------------------------- lineage
def test_lineage_names_the_version_and_catches_a_tree_that_differs(
    seeded: Path, incoming: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from garmentseg.data import plane

    root = shutil.copytree(seeded, tmp_path / "proj", symlinks=True)
    monkeypatch.delenv("GARMENTSEG__PATHS__DVC_REMOTE", raising=False)
    cfg = load_config("demo", root / "params.yaml")
    before = plane.lineage(cfg)
    assert before["data_state"].startswith("dirty: data version"), "the seeded version was never pushed"

    added = plane.add_batch(incoming, cfg)
    tags = plane.lineage(cfg)
    assert tags["data_version"] == added.data_version and tags["data_state"] == "clean"
    assert tags["git_commit"] not in ("unknown", "") and tags["git_commit"].endswith(
        "-dirty"
    )  # params edited
    pointer = yaml.safe_load((root / "data" / "batches" / "b-0001.dvc").read_text())["outs"][0]
    assert tags["data_md5.batches/b-0001"] == pointer["md5"]
    assert set(tags) >= {"data_md5.index.parquet", "data_md5.synth/demo"}

    (root / "data" / "batches" / "b-0001.dvc").unlink()
    assert plane.lineage(cfg)["data_state"] == (
        f"dirty: batches/b-0001.dvc differ from the manifest of {added.data_version}"
    )
    plane.publish(cfg)  # writes the pointer back; the version's manifest is unchanged
    garments = root / "data" / "batches" / "b-0001" / "garments.csv"
    garments.write_text(garments.read_text() + "\n")
    state = plane.lineage(cfg)["data_state"]
    assert state.startswith("dirty: batches/b-0001") and added.data_version in state
    with pytest.raises(plane.store.StoreError, match="already there with other content"):
        plane.publish(cfg)  # one data version, one content: the remote refuses a second
    shutil.rmtree(root / "data" / "batches" / "b-0001")
    assert plane.lineage(cfg)["data_state"].startswith("dirty: batches/b-0001"), "a missing folder differs"

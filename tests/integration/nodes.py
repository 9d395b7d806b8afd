"""What makes the production-mode test multi-node on one host: separate node directories that share no
files, an unprivileged OS user for the GPU worker, a read-only Python runtime outside every node (as an
image would carry it), a git origin each node clones, an S3 server as the only shared storage, and the
MLflow server with its basic-auth app and the platform's accounts.

A "node" here is a directory and the processes started in it with their own environment; what nodes share
is only what crosses the network: PostgreSQL, Redis, the S3 server, the MLflow server and Airflow's API.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from garmentseg import access
from garmentseg.data import versioning
from tests.integration import production as prod

ROOT = Path(__file__).resolve().parents[2]
WORKER_USER = "garmentseg-gpu"
GIT = ["git", "-c", "user.name=garmentseg-test", "-c", "user.email=test@example.com"]
# What a checkout of the project holds that a node needs (the code itself comes from the runtime).
PROJECT_FILES = ("params.yaml", "dvc.yaml", ".gitignore", ".dvcignore", "dags", "src", "bentos")
S3_KEYS = {  # the S3 test server takes any keys: these are not credentials
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
    "AWS_DEFAULT_REGION": "us-east-1",
}
DVC_BUCKET, MLFLOW_BUCKET = "garmentseg-dvc", "garmentseg-mlflow"
# throwaway accounts of a tracking server that lives for one test module
ADMIN = access.Account("admin", "admin-pw-multinode-31f0")  # pragma: allowlist secret
PIPELINE = access.Account("pipeline", "pipeline-pw-multinode-9a2e")  # pragma: allowlist secret
READER = access.Account("reader", "reader-pw-multinode-4c17")  # pragma: allowlist secret


# ---------------------------------------------------------------------------------------- OS user, dirs
@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def worker_user() -> User:
    """The GPU worker's unprivileged account, created (no home, no login) when absent. Needs root."""
    try:
        entry = pwd.getpwnam(WORKER_USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip(
                f"MULTI-NODE TEST SKIPPED: user {WORKER_USER} does not exist and only root can create it "
                f"(run once as root: useradd --system --no-create-home {WORKER_USER})"
            )
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", WORKER_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(WORKER_USER)
    return User(WORKER_USER, entry.pw_uid, entry.pw_gid)


@contextmanager
def nodes_root() -> Iterator[Path]:
    """A world-traversable folder for the nodes (pytest's tmp folders are private to their user)."""
    root = Path(tempfile.mkdtemp(prefix="garmentseg-nodes-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def private_dir(path: Path, owner: User | None = None) -> Path:
    """A node's own directory: mode 0700, owned by `owner` (default: this process's user)."""
    path.mkdir(parents=True)
    path.chmod(0o700)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def chown_tree(path: Path, owner: User) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), owner.uid, owner.gid)
    os.chown(path, owner.uid, owner.gid)


def can_read(user: User, path: Path, runtime: Runtime) -> bool:
    """Whether `user` can list `path` (asked of the kernel, as that user)."""
    probe = subprocess.run(
        [str(runtime.python), "-c", f"import os; os.listdir({str(path)!r})"],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=runtime.env(),
        capture_output=True,
        cwd="/",
    )
    return probe.returncode == 0


# ----------------------------------------------------------------------------------------- the runtime
@dataclass(frozen=True)
class Runtime:
    """Python, the locked environment and the project's code in one read-only tree outside every node."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.root / 'venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(self.root / "venv"),
            # the interpreter's RUNPATH names its build folder, which another user may not reach
            "LD_LIBRARY_PATH": str(self.root / "python" / "lib"),
            "PYTHONDONTWRITEBYTECODE": "1",  # the runtime is read-only to the node's user
            "PYTHONNOUSERSITE": "1",
        }


def _replace(path: Path, text: str) -> None:
    """Write a new file in place of a hard link (never through it: the link is the original's inode)."""
    path.unlink()
    path.write_text(text)


def _link_tree(source: Path, dest: Path) -> None:
    """A hard-linked copy (instant, no space) when on one filesystem, else a real copy."""
    linked = subprocess.run(["cp", "-al", str(source), str(dest)], capture_output=True)
    if linked.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["cp", "-a", str(source), str(dest)], check=True)


def build_runtime(dest: Path) -> Runtime:
    """This test process's interpreter and environment, relocated under `dest`: the base Python, the venv
    (pointed at that Python) and the project's code as the editable install's target."""
    started = time.monotonic()
    dest.mkdir()
    _link_tree(Path(sys.base_prefix), dest / "python")
    _link_tree(Path(sys.prefix), dest / "venv")
    (dest / "app").mkdir()
    for part in ("src", "bentos"):
        _link_tree(ROOT / part, dest / "app" / part)
    venv = dest / "venv"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    _replace(
        venv / "pyvenv.cfg",
        f"home = {dest / 'python' / 'bin'}\ninclude-system-site-packages = false\n"
        f"version = {sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}\n",
    )
    for name in ("python", "python3", version):
        (venv / "bin" / name).unlink(missing_ok=True)
        (venv / "bin" / name).symlink_to(dest / "python" / "bin" / version)
    for pth in (venv / "lib" / version / "site-packages").glob("_editable_impl_garmentseg*.pth"):
        _replace(pth, f"{dest / 'app' / 'src'}\n")
    for tree in (dest, *(p for p in dest.rglob("*") if p.is_dir() and not p.is_symlink())):
        tree.chmod(tree.stat().st_mode | 0o555)  # readable and traversable by every user
    print(f"[nodes] read-only runtime at {dest}: {time.monotonic() - started:.0f}s", flush=True)
    return Runtime(dest)


# ------------------------------------------------------------------------------------------ the project
def make_origin(dest: Path) -> Path:
    """The project as git holds it (world-readable, as a git server is to every node): this checkout's
    files a node needs, DVC initialised, no data, no remote in any tracked file."""
    dest.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    (dest / "data" / "batches").mkdir(parents=True)
    (dest / "data" / "batches" / ".gitkeep").touch()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    versioning.dvc(["init", "--quiet"], dest)
    shutil.copyfile(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "the project"], cwd=dest, check=True)
    return dest


def clone(origin: Path, dest: Path, owner: User | None = None) -> Path:
    """A node's checkout of the project; owned by `owner` (who runs the node's processes)."""
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True)
    if owner is not None:
        chown_tree(dest, owner)
    return dest


# --------------------------------------------------------------------------------------- shared services
def start_s3(stack: prod.Stack, runtime: Runtime) -> str:
    """moto's S3 server as a process of its own (the only storage the nodes share); buckets for the DVC
    remote and MLflow's artifacts. Returns the endpoint URL."""
    import boto3
    import httpx

    port = prod.free_port()
    stack.start(
        "s3-server",
        [str(runtime.python), "-m", "moto.server", "-H", prod.HOST, "-p", str(port)],
        env=runtime.env(),
        cwd=Path("/"),
    )
    endpoint = f"http://{prod.HOST}:{port}"
    stack.wait_for("S3 server", lambda: httpx.get(endpoint, timeout=3).status_code < 500, 60, 0.5)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_KEYS["AWS_DEFAULT_REGION"],
    )
    for bucket in (DVC_BUCKET, MLFLOW_BUCKET):
        s3.create_bucket(Bucket=bucket)
    return endpoint


def start_mlflow(
    stack: prod.Stack, runtime: Runtime, node: Path, *, backend_db: str, auth_db: str, s3: str
) -> str:
    """The tracking server with MLflow's basic-auth app (accounts in PostgreSQL, READ by default), the
    registry on PostgreSQL and proxied artifacts on S3; then the platform's accounts, as infra does it
    (`garmentseg registry bootstrap-auth`). Returns the tracking URL."""
    import httpx

    port = prod.free_port()
    ini = node / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {auth_db}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    url = f"http://{prod.HOST}:{port}"
    env = {
        **runtime.env(),
        **S3_KEYS,
        "HOME": str(node),
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN.password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-key-multinode-test",  # pragma: allowlist secret
    }
    stack.start(
        "mlflow-server",
        [
            *(str(runtime.python), "-m", "mlflow", "server", "--app-name", "basic-auth"),
            *("--backend-store-uri", backend_db),
            *("--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts", "--serve-artifacts"),
            *("--host", prod.HOST, "--port", str(port), "--workers", "1"),
            *("--allowed-hosts", f"{prod.HOST}:{port},{prod.HOST},localhost:{port},localhost"),
        ],
        env=env,
        cwd=node,
    )
    stack.wait_for(
        "MLflow server /health", lambda: httpx.get(f"{url}/health", timeout=5).status_code == 200, 240
    )
    return url


def bootstrap_accounts(stack: prod.Stack, tracking_uri: str, project: Path) -> None:
    """The admin creates the pipeline and reader accounts and grants the pipeline the model (infra's step)."""
    stack.run(
        "mlflow-bootstrap-auth",
        prod.garmentseg_cli("registry", "bootstrap-auth"),
        180,
        cwd=project,
        MLFLOW_TRACKING_URI=tracking_uri,
        GARMENTSEG_PARAMS=str(project / "params.yaml"),
        **account_env(ADMIN),
        **{access.PIPELINE_ENV[0]: PIPELINE.username, access.PIPELINE_ENV[1]: PIPELINE.password},
        **{access.READER_ENV[0]: READER.username, access.READER_ENV[1]: READER.password},
    )


def account_env(account: access.Account) -> dict[str, str]:
    return {access.USERNAME_ENV: account.username, access.PASSWORD_ENV: account.password}

"""The data's version and DVC: the `dvc` CLI of this interpreter run in the project root, the data
version, the git commit, and recording the index with DVC.

The data version is `data_version(cfg)`: the first 12 hex digits of a SHA-256 over the index's content
(every row's garment, view, paths, file hashes, split and batch, in a fixed order). It names what a model
was trained on: it changes when any file, split or batch changes, and does not depend on the parquet
writer's version or on DVC's cache state. A run on a folder outside the dataset is versioned by that
folder's own index content instead (`data_version(cfg, frame)`). `version_info` adds the git commit and the
DVC hashes of the tracked data (dvc.lock outs and each batch's .dvc file) for people who want to
`dvc checkout` it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from garmentseg.config import Config
from garmentseg.data.index import INDEX_FILE, index_hash, read_index

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REMOTE_NAME = "local"
_VERSION_COLUMNS = [
    "garment_id",
    "view",
    "raw_path",
    "cutout_path",
    "raw_sha256",
    "cutout_sha256",
    "split",
    "batch_id",
]


class DvcError(RuntimeError):
    """A DVC command failed; the message carries the command and DVC's stderr."""


def dvc(args: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m dvc ARGS` in root; raise DvcError with DVC's stderr when it fails."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "dvc", *args]
    log.debug("%s (in %s)", " ".join(cmd[2:]), root)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise DvcError(f"`dvc {' '.join(args)}` failed in {root} (exit {proc.returncode}): {detail}")
    return proc


def init(root: Path, remote: str | Path) -> None:
    """`dvc init` (if needed) and a default remote named `local` (a relative path is taken from root)."""
    if not (Path(root) / ".dvc").is_dir():
        dvc(["init", "--quiet"], root)
    dvc(["config", "core.analytics", "false"], root)
    dvc(["remote", "add", "--default", "--force", REMOTE_NAME, str(remote)], root)


def add(paths: list[Path | str], root: Path) -> None:
    """Track data paths (a folder or a file) with their own .dvc files."""
    dvc(["add", "--quiet", *[str(p) for p in paths]], root)


def commit(targets: list[str], root: Path) -> None:
    """Record the current state of stages (or .dvc files) in dvc.lock / the .dvc files and the cache."""
    dvc(["commit", "--force", "--quiet", *targets], root)


def push(root: Path, targets: list[str] | None = None, remote: str | None = None) -> None:
    dvc(["push", "--quiet", *(["--remote", remote] if remote else []), *(targets or [])], root)


def pull(root: Path, targets: list[str] | None = None, remote: str | None = None) -> None:
    dvc(["pull", "--quiet", *(["--remote", remote] if remote else []), *(targets or [])], root)


def status(root: Path, cloud: bool = False) -> dict[str, Any]:
    """`dvc status --json` (against the default remote with cloud=True): empty when all is in sync."""
    proc = dvc(["status", "--json", *(["--cloud"] if cloud else [])], root)
    text = proc.stdout.strip()
    return json.loads(text) if text else {}


def index_stage(cfg: Config) -> str | None:
    """The dvc.yaml stage whose output is the index, if the pipeline defines one."""
    pipeline = cfg.root / "dvc.yaml"
    if not pipeline.is_file():
        return None
    target = (cfg.path(cfg.paths.data_dir) / INDEX_FILE).relative_to(cfg.root).as_posix()
    for name, stage in ((yaml.safe_load(pipeline.read_text()) or {}).get("stages") or {}).items():
        outs = [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]
        if target in outs:
            return name
    return None


def record_index(cfg: Config) -> None:
    """Record the current index (and its deps) with DVC: the pipeline's stage, else its own .dvc file."""
    stage = index_stage(cfg)
    if stage:
        commit([stage], cfg.root)
    else:
        add([cfg.path(cfg.paths.data_dir) / INDEX_FILE], cfg.root)


def index_version(path: Path) -> str:
    """Short content hash of an index file (see the module docstring)."""
    df = read_index(path)[_VERSION_COLUMNS].sort_values(["garment_id", "view", "batch_id"])
    digest = hashlib.sha256(df.to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()[:12]


def data_version(cfg: Config, frame: pd.DataFrame | None = None) -> str:
    """The version of what a run trains or is gated on. The configured (DVC) dataset: its index_version, or
    "empty" before there is an index. Any other index (a folder given instead, loaded as `frame`):
    "index:" and the first 16 hex digits of its index_hash."""
    if frame is not None:
        return f"index:{index_hash(frame)[:16]}"
    path = cfg.path(cfg.paths.data_dir) / INDEX_FILE
    return index_version(path) if path.is_file() else "empty"


def git_commit(root: Path, *, short: bool = False) -> str:
    """HEAD of the project (12 hex digits when short), with `-dirty` when tracked files have changes;
    "unknown" outside git."""
    rev = ["git", "rev-parse", *(["--short=12"] if short else []), "HEAD"]
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    try:
        sha = subprocess.run(rev, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(status, cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def tracked_hashes(cfg: Config) -> dict[str, str]:
    """DVC's recorded md5 of every data path: pipeline outs in dvc.lock, and each batch's .dvc file."""
    root, data = cfg.root, cfg.path(cfg.paths.data_dir)
    found: dict[str, str] = {}
    lock = root / "dvc.lock"
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                found[out["path"]] = out.get("md5", "")
    for dvc_file in sorted(data.rglob("*.dvc")):
        for out in (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", []):
            path = (dvc_file.parent / out["path"]).relative_to(root).as_posix()
            found[path] = out.get("md5", "")
    return found


def version_info(cfg: Config) -> dict[str, Any]:
    """Everything that identifies the current data: version, git commit, DVC hashes."""
    return {
        "data_version": data_version(cfg),
        "git_commit": git_commit(cfg.root, short=True),
        "dvc": tracked_hashes(cfg),
    }

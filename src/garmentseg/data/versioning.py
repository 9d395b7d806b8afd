"""The names of what a run used: the data version and the git commit; and the `dvc` CLI of this
interpreter, for the few commands the data plane runs as a user would (init, status, pull).

The data version is `data_version(cfg)`: the first 12 hex digits of a SHA-256 over the index's content
(every row's garment, view, paths, file hashes, split and batch, in a fixed order). It names what a model
was trained on: it changes when any file, split or batch changes, and does not depend on the parquet
writer's version or on DVC's cache state. The remote's manifest of that version (see `store`) pins the
bytes of every path. A run on a folder outside the dataset is versioned by that folder's own index content
instead (`data_version(cfg, frame)`).
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

from garmentseg.config import Config
from garmentseg.data.index import INDEX_FILE, index_hash, read_index

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

GIT_COMMIT_ENV = "GARMENTSEG_GIT_COMMIT"
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
        detail = (proc.stderr or proc.stdout).strip() or "DVC printed no reason"
        raise DvcError(f"`dvc {' '.join(args)}` failed in {root} (exit {proc.returncode}): {detail}")
    return proc


def init(root: Path, remote: str | Path) -> None:
    """`dvc init` (if needed) and REMOTE (a URL, or a path taken from root) as the default remote, written
    to .dvc/config.local only."""
    from garmentseg.data.store import set_remote

    if not (Path(root) / ".dvc").is_dir():
        dvc(["init", "--quiet"], root)
    dvc(["config", "core.analytics", "false"], root)
    url = str(remote)
    set_remote(Path(root), url if "://" in url else str((Path(root) / url).resolve()))


def status(root: Path, cloud: bool = False) -> dict[str, Any]:
    """`dvc status --json` (against the default remote with cloud=True): empty when all is in sync."""
    proc = dvc(["status", "--json", *(["--cloud"] if cloud else [])], root)
    text = proc.stdout.strip()
    return json.loads(text) if text else {}


VERSION_DIGITS = 12  # a data version: the first hex digits of the index's content digest


def is_data_version(text: str) -> bool:
    """Whether text can name a data version (so it never names a path outside the remote's manifests)."""
    return len(text) == VERSION_DIGITS and all(c in "0123456789abcdef" for c in text)


def index_version(path: Path) -> str:
    """Short content hash of an index file (see the module docstring)."""
    df = read_index(path)[_VERSION_COLUMNS].sort_values(["garment_id", "view", "batch_id"])
    digest = hashlib.sha256(df.to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()[:VERSION_DIGITS]


def data_version(cfg: Config, frame: pd.DataFrame | None = None) -> str:
    """The version of what a run trains or is gated on. The configured (DVC) dataset: its index_version, or
    "empty" before there is an index. Any other index (a folder given instead, loaded as `frame`):
    "index:" and the first 16 hex digits of its index_hash."""
    if frame is not None:
        return f"index:{index_hash(frame)[:16]}"
    path = cfg.path(cfg.paths.data_dir) / INDEX_FILE
    return index_version(path) if path.is_file() else "empty"


def git_commit(root: Path, *, short: bool = False) -> str:
    """HEAD of the project (12 hex digits when short), with `-dirty` when tracked files have changes.
    A work tree without a commit is "uncommitted". Outside git (an image): $GARMENTSEG_GIT_COMMIT, the
    commit baked in at build time, else "unknown" with a warning; never "unknown" in a git checkout."""
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True)
    except OSError:
        inside = None
    if inside is None or inside.returncode != 0:
        baked = os.environ.get(GIT_COMMIT_ENV)
        if not baked:
            log.warning(
                "%s is not a git work tree and $%s is unset: git commit unknown", root, GIT_COMMIT_ENV
            )
        return baked or "unknown"
    rev = ["git", "rev-parse", "--verify", "--quiet", *(["--short=12"] if short else []), "HEAD"]
    sha = subprocess.run(rev, cwd=root, capture_output=True, text=True).stdout.strip() or "uncommitted"
    status = ["git", "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    return f"{sha}-dirty" if dirty else sha

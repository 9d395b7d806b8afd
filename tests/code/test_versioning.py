"""The data version and the git commit: one rule each, the strings runs and gate decisions are keyed by
(the pinned values are what the code produced before the two rules were merged)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from garmentseg.config import Config
from garmentseg.data.index import INDEX_COLUMNS, index_hash, write_index
from garmentseg.data.versioning import data_version, git_commit, index_version


def _frame() -> pd.DataFrame:
    rows = [
        {
            "garment_id": f"{i:08x}-0000-4000-8000-000000000000",
            "view": view,
            "raw_path": f"raw/{i}_{view}.png",
            "cutout_path": f"cutouts/{i}_{view}.png",
            "raw_sha256": f"{i}r{view}",
            "cutout_sha256": f"{i}c{view}",
            "width": 64,
            "height": 96,
            "split": "train" if i % 2 else "test",
            "garment_type": "dress",
            "difficulty": "normal",
            "batch_id": "b1",
        }
        for i in range(3)
        for view in ("Front", "Back")
    ]
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


def _with_data_dir(cfg: Config, data: Path) -> Config:
    return cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"data_dir": data})})


def test_the_configured_dataset_is_versioned_by_its_index_file(cfg: Config, tmp_path: Path) -> None:
    configured = _with_data_dir(cfg, tmp_path / "data")
    assert data_version(configured) == "empty"
    path = write_index(_frame(), tmp_path / "data" / "index.parquet")
    assert data_version(configured) == index_version(path) == "a767dddeaf1a"
    assert data_version(configured) == data_version(configured, None)


def test_another_folder_is_versioned_by_its_content(cfg: Config) -> None:
    frame = _frame()
    assert data_version(cfg, frame) == f"index:{index_hash(frame)[:16]}" == "index:e3a7a4468b4d11a1"
    assert data_version(cfg, frame.sample(frac=1, random_state=1)) == data_version(cfg, frame)
    assert data_version(cfg, frame.assign(split="valid")) != data_version(cfg, frame)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_names_head_and_tracked_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git is not installed")
    monkeypatch.delenv("GARMENTSEG_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown", "outside git, with nothing baked in"
    monkeypatch.setenv("GARMENTSEG_GIT_COMMIT", "0123456789ab")
    assert git_commit(tmp_path) == "0123456789ab", "an image's commit, baked in at build time"
    _git(tmp_path, "init", "-q")
    assert git_commit(tmp_path) == "uncommitted", "a work tree is never unknown, even before its first commit"
    (tmp_path / "a.txt").write_text("a\n")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "a")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    assert git_commit(tmp_path, short=True) == head[:12]
    (tmp_path / "untracked.txt").write_text("x\n")
    assert git_commit(tmp_path) == head, "untracked files leave the commit clean"
    (tmp_path / "a.txt").write_text("b\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
    assert git_commit(tmp_path, short=True) == f"{head[:12]}-dirty"


def test_this_checkout_has_a_commit(project_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GARMENTSEG_GIT_COMMIT", raising=False)
    commit = git_commit(project_root)
    assert commit not in ("unknown", "uncommitted") and len(commit.removesuffix("-dirty")) == 40

"""garment_review_import's step (orchestration/tasks.py) on real engines: a returned folder of corrections
goes in as a new data version and closes its items; the same folder again is no change (the DAG skips,
emitting no asset); a refused folder is answered with each file and reason (the DAG fails the run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from garmentseg.config import Config
from garmentseg.data import versioning
from garmentseg.imageio import read_image, write_png
from garmentseg.orchestration import tasks
from garmentseg.review.roundtrip import export_items
from garmentseg.review.store import ReviewQueue
from tests.review.test_roundtrip import project  # noqa: F401 - the fixture: a DVC project, two queued shots

pytestmark = pytest.mark.slow


def _returned(cfg: Config, folder: Path) -> list[str]:
    """Export the open items; the true cutouts (the ingested batch's) stand in for the retoucher's."""
    items = export_items(ReviewQueue.from_config(cfg), folder, cfg, pending=True)
    truths = cfg.path(cfg.paths.data_dir) / "batches" / "b-base" / "cutouts"
    for item in items:
        shutil.copyfile(truths / f"{item.file}.png", folder / "cutouts" / f"{item.file}.png")
    return [item.file for item in items]


def test_corrections_go_in_once_and_close_their_items(project: Config, tmp_path: Path) -> None:  # noqa: F811
    files = _returned(project, tmp_path / "returned")
    before = versioning.data_version(project)
    first = tasks.import_returned_corrections(project, str(tmp_path / "returned"), "ana")
    assert first["ok"] and first["changed"] and len(first["closed"]) == len(files) == 2
    assert first["data_version"] == versioning.data_version(project) != before
    assert {(i.state, i.decided_by) for i in ReviewQueue.from_config(project).items()} == {("closed", "ana")}
    again = tasks.import_returned_corrections(project, str(tmp_path / "returned"), "ana")
    assert again["ok"] and not again["changed"] and again["batch_id"] == first["batch_id"]
    assert versioning.data_version(project) == first["data_version"]


def test_a_refused_folder_names_each_file_and_reason(project: Config, tmp_path: Path) -> None:  # noqa: F811
    _returned(project, tmp_path / "returned")
    bad = sorted((tmp_path / "returned" / "cutouts").iterdir())[0]
    cutout = read_image(bad, max_pixels=10**7, alpha=True)
    cutout[..., 3] = 255 - cutout[..., 3]  # an inverted mask
    write_png(bad, cutout)
    before = versioning.data_version(project)
    refused = tasks.import_returned_corrections(project, str(tmp_path / "returned"), "ana")
    assert not refused["ok"] and not refused["changed"] and refused["closed"] == []
    assert any(line.startswith(f"cutouts/{bad.name}: ") for line in refused["refused"]), refused["refused"]
    assert versioning.data_version(project) == before
    assert {i.state for i in ReviewQueue.from_config(project).items()} == {"pending"}

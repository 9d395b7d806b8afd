"""A corrected batch re-delivered under a quarantined id is scanned again when its content changed, and only
then: the same broken content landing again stays where the first one went."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from garmentseg.data import versioning
from garmentseg.orchestration import tasks
from garmentseg.validation import ingest_batch
from garmentseg.validation.defects import inject_defects, write_clean_batch
from garmentseg.validation.ingest import where_is
from tests.data.test_validation import GARMENTS, H, W, small_project

pytestmark = pytest.mark.slow


def test_a_changed_redelivery_under_a_quarantined_id_is_scanned_again(tmp_path: Path) -> None:
    cfg = small_project(tmp_path / "project")
    subprocess.run(["git", "init", "-q"], cwd=cfg.root, check=True)
    versioning.init(cfg.root, cfg.path(cfg.paths.dvc_remote))
    landing = cfg.path(cfg.paths.landing_dir)
    pristine = tmp_path / "pristine"
    write_clean_batch(pristine, GARMENTS, width=W, height=H, seed=1)
    shutil.copytree(pristine, landing / "b-week")
    inject_defects(landing / "b-week")
    broken = tmp_path / "broken"
    shutil.copytree(landing / "b-week", broken)
    assert tasks.ingest_run_id(cfg, "b-week") == "batch__b-week"
    assert ingest_batch(landing / "b-week", cfg).status == "quarantined"

    shutil.copytree(broken, landing / "b-week")  # the same broken delivery lands again: nothing new
    assert where_is(cfg, "b-week", landing / "b-week")[0] == "quarantined"
    assert tasks.new_landed_batches(cfg) == []
    shutil.rmtree(landing / "b-week")

    shutil.copytree(pristine, landing / "b-week")  # the studio's corrected delivery, same id
    assert tasks.new_landed_batches(cfg) == ["b-week"]
    run_id = tasks.ingest_run_id(cfg, "b-week")
    assert run_id.startswith("batch__b-week__") and run_id != "batch__b-week"
    outcome = ingest_batch(landing / "b-week", cfg)
    assert outcome.status == "ingested" and where_is(cfg, "b-week")[0] == "ingested"

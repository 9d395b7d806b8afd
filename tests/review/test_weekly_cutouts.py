"""The weekly review job's steps (orchestration/tasks.py): which deliveries are new, and one delivery cut out
with its doubtful cutouts queued, once, through predict's own folder path."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from garmentseg.config import Config, load_config
from garmentseg.imageio import write_png
from garmentseg.inference import CutoutModel
from garmentseg.orchestration import tasks
from garmentseg.review.store import ReviewQueue
from tests.review.fixed import fixed_quality


class CentreBox:
    """A stand-in for the U-Net: the garment is the central half of the frame."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        prob = np.zeros((n, h, w, 1), np.float32)
        prob[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
        return prob


def _model(review_below: float) -> CutoutModel:
    model = CutoutModel(CentreBox(), (0.5,) * 3, (0.25,) * 3, 0.5, 16, 16, model_version="4")
    model.quality = fixed_quality(review_below)  # every cutout estimated ~0.955
    return model


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(
        "demo",
        overrides={
            "paths": {
                "deliveries_dir": str(tmp_path / "deliveries"),
                "cutouts_dir": str(tmp_path / "cutouts"),
            },
            "review": {"database": f"sqlite:///{tmp_path}/queue.db", "storage_dir": str(tmp_path / "items")},
            "sources": {"studio": {"width": 48, "height": 64}},  # the deliveries' small shots
        },
    )


def _deliver(cfg: Config, delivery: str, garments: int) -> list[str]:
    names = []
    for g in range(garments):
        garment = uuid.uuid5(uuid.NAMESPACE_URL, f"{delivery}/{g}")
        for view, grey in (("Front", 200), ("Back", 90)):
            names.append(f"{garment}_{view}")
            write_png(
                cfg.path(cfg.paths.deliveries_dir) / delivery / f"{names[-1]}.png",
                np.full((64, 48, 3), grey + g, np.uint8),
            )
    return names


def test_new_deliveries_are_those_without_a_finished_record(cfg: Config) -> None:
    assert tasks.new_deliveries(cfg) == []  # no deliveries folder at all
    _deliver(cfg, "week-02", 1)
    _deliver(cfg, "week-01", 1)
    (cfg.path(cfg.paths.deliveries_dir) / ".partial").mkdir()
    assert tasks.new_deliveries(cfg) == ["week-01", "week-02"]
    queue = ReviewQueue.from_config(cfg)
    tasks.cut_out_delivery(cfg, _model(0.5), queue, "week-01")
    assert tasks.new_deliveries(cfg) == ["week-02"]


def test_a_delivery_changed_after_it_was_cut_out_is_new_again(cfg: Config) -> None:
    """The studio replaces a shot it fixed, or its upload was still running: the next weekly run redoes it."""
    names = _deliver(cfg, "week-03", 1)
    queue, folder = ReviewQueue.from_config(cfg), cfg.path(cfg.paths.deliveries_dir) / "week-03"
    (folder / f"{names[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\nhalf uploaded")
    first = tasks.cut_out_delivery(cfg, _model(0.99), queue, "week-03")
    assert len(first["skipped"]) == 1 and tasks.new_deliveries(cfg) == []

    write_png(folder / f"{names[0]}.png", np.full((64, 48, 3), 150, np.uint8))  # the studio's fixed file
    assert tasks.new_deliveries(cfg) == ["week-03"]
    again = tasks.cut_out_delivery(cfg, _model(0.99), queue, "week-03")
    assert (again["written"], again["skipped"]) == (2, []) and tasks.new_deliveries(cfg) == []
    assert sorted(i.file for i in queue.items()) == sorted(names)

    (folder / ".DS_Store").write_bytes(b"a file manager's")  # hidden files change nothing
    assert tasks.new_deliveries(cfg) == []
    write_png(folder / f"{uuid.uuid4()}_Front.png", np.full((64, 48, 3), 60, np.uint8))  # one shot more
    assert tasks.new_deliveries(cfg) == ["week-03"]
    record = cfg.path(cfg.paths.cutouts_dir) / "week-03" / tasks.DELIVERY_RECORD
    for broken in ('{"written": 2, "queu', "[]"):  # a record cut short, or not a record: not done
        record.write_text(broken)
        assert tasks.new_deliveries(cfg) == ["week-03"]


def test_one_delivery_that_fails_holds_back_no_other(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    _deliver(cfg, "week-09", 1)
    _deliver(cfg, "week-10", 1)
    foreign = cfg.path(cfg.paths.cutouts_dir) / "week-09" / "scores.csv"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("garment;owner\n")  # someone's own file where the cutouts go
    monkeypatch.setattr("garmentseg.predict.load_model", lambda *_: _model(0.99))  # the stand-in U-Net
    with pytest.raises(RuntimeError, match=r"1 of 2 deliveries not cut out .* week-09: .*scores\.csv"):
        tasks.cut_out_deliveries(cfg, tasks.new_deliveries(cfg))
    assert tasks.new_deliveries(cfg) == ["week-09"]  # week-10 is done and queued
    assert {i.file.rsplit("_", 1)[1] for i in ReviewQueue.from_config(cfg).items()} == {"Front", "Back"}


def test_a_delivery_is_cut_out_and_its_doubtful_cutouts_queued_once(cfg: Config) -> None:
    names = _deliver(cfg, "week-07", 2)
    queue = ReviewQueue.from_config(cfg)
    for _ in range(2):  # a retried task: the same shots stay queued once
        record = tasks.cut_out_delivery(cfg, _model(0.99), queue, "week-07")
    assert (record["written"], record["queued"], record["skipped"], record["not_queued"]) == (4, 4, [], [])
    out = cfg.path(cfg.paths.cutouts_dir) / "week-07"
    assert json.loads((out / tasks.DELIVERY_RECORD).read_text()) == record
    assert sorted(p.stem for p in (out / "cutouts").glob("*.png")) == sorted(names)
    items = queue.items()
    assert sorted(i.file for i in items) == sorted(names)
    assert all(i.state == "pending" and i.model_version == "4" for i in items)
    assert all(i.shot_path.is_relative_to(cfg.path(cfg.review.storage_dir)) for i in items)


def test_confident_cutouts_are_written_but_not_queued(cfg: Config) -> None:
    _deliver(cfg, "week-08", 1)
    record = tasks.cut_out_delivery(cfg, _model(0.5), ReviewQueue.from_config(cfg), "week-08")
    assert (record["written"], record["queued"]) == (2, 0)
    queue = ReviewQueue.from_config(cfg)
    assert queue.items() == []
    (logged,) = queue.cutout_stats()
    assert (logged["cutouts"], logged["doubtful"], logged["model_version"]) == (2, 0, "4")

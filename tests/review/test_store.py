"""The review queue on its real engines: SQLite files and the machine's PostgreSQL, several processes at once."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from garmentseg.config import load_config
from garmentseg.imageio import write_png
from garmentseg.review.store import ReviewQueue
from tests.integration.pg import postgres_database

WORKERS = 4
SHOTS_PER_WORKER = 12
SHARED_SHOTS = 4  # every worker also cuts out these: each must be queued once


def _shot(folder: Path, seed: int) -> tuple[str, Path, Path]:
    """A tiny shot and its cutout, different pixels per seed; the file name follows the data contract."""
    rng = np.random.default_rng(seed)
    name = f"{uuid.UUID(int=seed + 1)}_Front"
    shot = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    write_png(folder / "raw" / f"{name}.png", shot)
    write_png(folder / "cutouts" / f"{name}.png", np.dstack([shot, np.full((6, 4), 255, np.uint8)]))
    return name, folder / "raw" / f"{name}.png", folder / "cutouts" / f"{name}.png"


def _config(database: str, storage: Path):
    return load_config("demo", overrides={"review": {"database": database, "storage_dir": str(storage)}})


def _record_many(database: str, storage: str, folder: str, seeds: list[int]) -> None:
    queue = ReviewQueue.from_config(_config(database, Path(storage)))
    for seed in seeds:
        name, shot, cutout = _shot(Path(folder) / str(seed), seed)
        queue.record_cutout(
            file=name,
            shot=shot,
            cutout=cutout,
            estimate=seed / 100,
            needs_review=True,
            model_version="3",
            source="test",
        )


@pytest.fixture
def queue(tmp_path: Path) -> ReviewQueue:
    return ReviewQueue.from_config(_config(f"sqlite:///{tmp_path}/queue.db", tmp_path / "items"))


def test_a_doubtful_cutout_is_copied_in_and_queued_once(queue: ReviewQueue, tmp_path: Path) -> None:
    name, shot, cutout = _shot(tmp_path / "caller", 1)
    kwargs = {"file": name, "estimate": 0.91, "model_version": "3", "source": "predict"}
    first = queue.record(shot=shot, cutout=cutout, **kwargs)
    again = queue.record(shot=shot, cutout=cutout, **kwargs)
    assert first is not None and again == first
    assert (first.state, first.file, first.decided_by) == ("pending", name, None)
    assert first.shot_path.is_relative_to(queue.storage_dir)
    assert first.shot_path.read_bytes() == shot.read_bytes()
    assert first.cutout_path.read_bytes() == cutout.read_bytes()
    shot.unlink()  # the caller's folder may go: the queue keeps its own copy
    assert queue.get(first.id).shot_path.is_file()
    assert [item.id for item in queue.items()] == [first.id]


def test_every_cutout_is_logged_with_its_estimate_and_only_a_doubtful_one_queued(
    queue: ReviewQueue, tmp_path: Path
) -> None:
    confident, shot, cutout = _shot(tmp_path / "a", 2)
    kwargs = {"model_version": "3", "source": "predict"}
    assert (
        queue.record_cutout(
            file=confident, shot=shot, cutout=cutout, estimate=0.99, needs_review=False, **kwargs
        )
        is None
    )
    assert queue.items() == []
    assert not queue.storage_dir.exists()  # nothing copied for a cutout nobody needs to see
    doubtful, shot, cutout = _shot(tmp_path / "b", 3)
    for _ in range(2):  # the same shot cut out twice: logged twice, queued once
        item = queue.record_cutout(
            file=doubtful, shot=shot, cutout=cutout, estimate=0.7, needs_review=True, **kwargs
        )
    assert [i.file for i in queue.items()] == [doubtful] and item.state == "pending"
    (stats,) = queue.cutout_stats()
    assert {k: stats[k] for k in ("model_version", "source", "cutouts", "doubtful")} == {
        "model_version": "3",
        "source": "predict",
        "cutouts": 3,
        "doubtful": 2,
    }
    assert stats["doubtful_share"] == pytest.approx(2 / 3)
    assert stats["mean_estimate"] == pytest.approx((0.99 + 0.7 + 0.7) / 3)
    assert stats["lowest_estimate"] == pytest.approx(0.7)


def test_items_come_worst_first_and_decisions_record_who_and_when(queue: ReviewQueue, tmp_path: Path) -> None:
    ids = {}
    for seed, estimate in ((3, 0.95), (4, 0.60), (5, 0.80)):
        name, shot, cutout = _shot(tmp_path / str(seed), seed)
        ids[seed] = queue.record(
            file=name,
            shot=shot,
            cutout=cutout,
            estimate=estimate,
            model_version="3",
            source="t",
        ).id
    assert [i.estimate for i in queue.items()] == [0.60, 0.80, 0.95]
    decided = queue.decide(ids[4], "retouch", by="ana")
    assert (decided.state, decided.decided_by) == ("retouch", "ana")
    assert decided.decided_at is not None and decided.decided_at.tzinfo is not None
    assert [i.id for i in queue.items(["retouch"])] == [ids[4]]
    queue.close([ids[4], ids[3]], by="import")
    closed = {i.id: i for i in queue.items(["closed"])}
    assert closed[ids[4]].decided_by == "ana"  # the reviewer's decision stays on record
    assert closed[ids[3]].decided_by == "import"  # closed undecided: the import is who decided
    with pytest.raises(ValueError, match=rf"review item {ids[4]} .* is closed"):
        queue.decide(ids[4], "accept", by="ana")
    with pytest.raises(KeyError, match="review item 999 does not exist"):
        queue.decide(999, "accept", by="ana")
    with pytest.raises(ValueError, match="'approve' is not one of accept, retouch, reject"):
        queue.decide(ids[5], "approve", by="ana")
    with pytest.raises(ValueError, match="unknown review states"):
        queue.items(["done"])


def test_opening_migrates_once_and_keeps_the_data(queue: ReviewQueue, tmp_path: Path) -> None:
    name, shot, cutout = _shot(tmp_path, 6)
    queue.record(file=name, shot=shot, cutout=cutout, estimate=0.5, model_version="3", source="t")
    reopened = ReviewQueue.from_config(_config(f"sqlite:///{tmp_path}/queue.db", tmp_path / "items"))
    assert [i.file for i in reopened.items()] == [name]
    with reopened.engine.connect() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM review_alembic_version")).scalars().all()
    assert versions == ["cutout_log"]


def test_a_queue_made_by_the_first_schema_is_upgraded_with_its_items(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from garmentseg.review.store import MIGRATIONS, make_engine

    url = f"sqlite:///{tmp_path}/queue.db"
    alembic_cfg = AlembicConfig()
    alembic_cfg.set_main_option("script_location", str(MIGRATIONS))
    with make_engine(url).begin() as conn:
        alembic_cfg.attributes["connection"] = conn
        command.upgrade(alembic_cfg, "queue_table")
        conn.execute(
            sa.text(
                "INSERT INTO review_items (shot_sha256, file, state, estimate, needs_review, shot_path, "
                "cutout_path, model_version, source, created_at) VALUES ('ab', 'g_Front', 'pending', 0.5, 1, "
                "'s.png', 'c.png', '1', 'predict', '2026-11-30 10:00:00')"
            )
        )
    queue = ReviewQueue.from_config(_config(url, tmp_path / "items"))
    assert [(i.file, i.estimate) for i in queue.items()] == [("g_Front", 0.5)]
    assert queue.cutout_stats() == []


def _concurrent_writers_lose_nothing(database: str, tmp_path: Path) -> None:
    storage = tmp_path / "items"
    plans = [
        [*range(100 + w * SHOTS_PER_WORKER, 100 + (w + 1) * SHOTS_PER_WORKER), *range(SHARED_SHOTS)]
        for w in range(WORKERS)
    ]
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_record_many, args=(database, str(storage), str(tmp_path / f"w{w}"), seeds))
        for w, seeds in enumerate(plans)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    queue = ReviewQueue.from_config(_config(database, storage))
    names = sorted(i.file for i in queue.items())
    expected = sorted({f"{uuid.UUID(int=s + 1)}_Front" for plan in plans for s in plan})
    assert names == expected
    assert len(names) == WORKERS * SHOTS_PER_WORKER + SHARED_SHOTS
    assert all(i.shot_path.is_file() and i.cutout_path.is_file() for i in queue.items())
    (stats,) = queue.cutout_stats()
    assert stats["cutouts"] == sum(len(plan) for plan in plans), "every cutout logged"


def test_concurrent_writers_on_sqlite_lose_nothing(tmp_path: Path) -> None:
    _concurrent_writers_lose_nothing(f"sqlite:///{tmp_path}/queue.db", tmp_path)


def test_concurrent_writers_on_postgresql_lose_nothing(tmp_path: Path) -> None:
    with postgres_database("review") as url:
        _concurrent_writers_lose_nothing(url, tmp_path)

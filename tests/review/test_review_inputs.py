"""`garmentseg review decide` and the queue refuse what no item or reviewer can be, with the rule, not a
traceback: ids beyond the database's INTEGER, names the review page would refuse, two decisions at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from garmentseg.config import load_config
from garmentseg.imageio import write_png
from garmentseg.review.cli import review
from garmentseg.review.store import MAX_ITEM_ID, ReviewItem, ReviewQueue

BAD_NAMES = ("x" * 300, "ana\x1bbob", "   ")


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReviewQueue:
    """A queue in tmp, where every `review` command finds it, holding one pending item."""
    monkeypatch.setenv("GARMENTSEG__REVIEW__DATABASE", f"sqlite:///{tmp_path}/queue.db")
    monkeypatch.setenv("GARMENTSEG__REVIEW__STORAGE_DIR", str(tmp_path / "items"))
    shot = np.full((6, 4, 3), 200, np.uint8)
    write_png(tmp_path / "shot.png", shot)
    write_png(tmp_path / "cutout.png", np.dstack([shot, np.full((6, 4), 255, np.uint8)]))
    queue = ReviewQueue.from_config(load_config("demo"))
    queue.record(
        file="00000000-0000-0000-0000-000000000001_Front",
        shot=tmp_path / "shot.png",
        cutout=tmp_path / "cutout.png",
        estimate=0.6,
        model_version="3",
        source="test",
    )
    return queue


def _item(queue: ReviewQueue) -> ReviewItem:
    (item,) = queue.items()
    return item


def test_an_id_beyond_the_database_integer_does_not_exist(queue: ReviewQueue) -> None:
    huge = "99999999999999999999"
    answer = CliRunner().invoke(review, ["decide", huge, "--accept", "--by", "ana"])
    assert answer.exit_code == 1 and answer.exception is not None
    assert isinstance(answer.exception, SystemExit), answer.exception
    assert f"review item {huge} does not exist" in answer.output
    for item_id in (MAX_ITEM_ID + 1, -(2**70), 0):
        with pytest.raises(KeyError, match=f"review item {item_id} does not exist"):
            queue.get(item_id)
        with pytest.raises(KeyError, match=f"review item {item_id} does not exist"):
            queue.decide(item_id, "accept", by="ana")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_decide_takes_only_a_name_the_page_would(queue: ReviewQueue, name: str) -> None:
    item = _item(queue)
    answer = CliRunner().invoke(review, ["decide", str(item.id), "--accept", "--by", name])
    assert answer.exit_code == 2 and "1-64 printable characters" in answer.output, answer.output
    assert "--by" in answer.output
    with pytest.raises(ValueError, match="1-64 printable characters"):
        queue.decide(item.id, "accept", by=name)
    assert _item(queue).state == "pending"


def test_import_takes_only_a_name_the_page_would(queue: ReviewQueue, tmp_path: Path) -> None:  # noqa: ARG001 - sets the environment
    answer = CliRunner().invoke(review, ["import", str(tmp_path), "--no-push", "--by", "x" * 300])
    assert answer.exit_code == 2 and "1-64 printable characters" in answer.output, answer.output


def test_decide_records_the_name_as_the_page_would(queue: ReviewQueue) -> None:
    item = _item(queue)
    answer = CliRunner().invoke(review, ["decide", str(item.id), "--retouch", "--by", " Ana \n Retoucher "])
    assert answer.exit_code == 0, answer.output
    assert (_item(queue).state, _item(queue).decided_by) == ("retouch", "Ana Retoucher")  # one line


def test_two_decisions_at_once_are_a_usage_error(queue: ReviewQueue) -> None:
    item = _item(queue)
    answer = CliRunner().invoke(review, ["decide", str(item.id), "--accept", "--reject", "--by", "ana"])
    assert answer.exit_code == 2 and "--accept and --reject conflict" in answer.output, answer.output
    assert _item(queue).state == "pending"
    none = CliRunner().invoke(review, ["decide", str(item.id), "--by", "ana"])
    assert none.exit_code == 2 and "give one of --accept, --retouch, --reject" in none.output

"""Cutting out a folder: which files are shots, what is written for each, and how an unreadable one is named."""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest

from garmentseg import predict
from garmentseg.imageio import read_image, write_png
from garmentseg.inference import CutoutModel


class CentreSquare:
    """A stand-in for the U-Net: garment in the central half of the frame, sure of it away from the edge."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        prob = np.zeros((n, h, w, 1), np.float32)
        prob[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
        return prob


def _model() -> CutoutModel:
    return CutoutModel(CentreSquare(), (0.5,) * 3, (0.25,) * 3, 0.5, 16, 16, flag_threshold=50.0)


def test_list_shots_takes_png_and_jpeg_of_any_case_directly_inside_by_name(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.jpeg", "notes.txt", "a.png", ".DS_Store", "shot.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.png").write_bytes(b"x")
    shots, ignored = predict.list_shots(tmp_path)
    assert [p.name for p in shots] == ["a.jpg", "b.PNG", "c.jpeg"]
    assert dict(ignored) == {
        "a.png": "same name as a.jpg; its cutout would replace that one's",
        "nested": "a folder: shots sit directly in it",
        "notes.txt": "not a PNG or JPEG shot",
        "shot.tif": "not a PNG or JPEG shot",
    }


def test_cut_out_folder_writes_cutouts_masks_and_scores_and_names_what_it_skips(tmp_path):
    shots = tmp_path / "in"
    image = np.full((64, 48, 3), 200, np.uint8)
    write_png(shots / "one.png", image)
    write_png(shots / "two.png", image)
    (shots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_png(shots / os.fsdecode(b"caf\xe9.png"), image)  # a Latin-1 name from an old archive
    out = tmp_path / "out"
    result = predict.cut_out_folder(_model(), predict.list_shots(shots)[0], out, max_pixels=10**6)
    assert result.written == 2
    assert result.skipped[0][0] == "broken.png"
    assert result.skipped[1] == ("caf\\xe9.png", "file name is not UTF-8 text; rename it")
    cutout = read_image(out / "cutouts" / "one.png", max_pixels=10**6, alpha=True)
    mask = read_image(out / "masks" / "two.png", max_pixels=10**6)
    assert cutout.shape == (64, 48, 4) and mask.shape[:2] == (64, 48)
    assert cutout[32, 24, 3] == 255 and cutout[2, 2, 3] == 0
    shown = cutout[..., 3] > 0
    assert np.array_equal(cutout[..., :3][shown], image[shown]) and not cutout[..., :3][~shown].any()
    with (out / predict.SCORES_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["one.png", "two.png"]
    assert all(r["needs_manual_cutout"] == "False" for r in rows)


def _reviewing_model(review_below: float) -> CutoutModel:
    """The stand-in with a fixed Dice estimate attached (~0.955 for every cutout)."""
    from tests.review.fixed import fixed_quality

    model = _model()
    model.quality = fixed_quality(review_below)
    return model


def test_the_doubtful_cutouts_are_queued_once_by_contract_name(tmp_path):
    from garmentseg.config import load_config
    from garmentseg.review.store import ReviewQueue
    from tests.review.fixed import LOG_ERROR

    cfg = load_config(
        "demo",
        overrides={
            "review": {"database": f"sqlite:///{tmp_path}/q.db", "storage_dir": str(tmp_path / "items")},
            "sources": {"studio": {"width": 48, "height": 64}},
        },
    )
    queue = ReviewQueue.from_config(cfg)
    shots = tmp_path / "in"
    garment = "0b7e7a52-3c59-4d52-9a59-7a1f1f6e2a10"
    write_png(shots / f"{garment}_Front.png", np.full((64, 48, 3), 200, np.uint8))
    write_png(shots / f"{garment}_Back.png", np.full((64, 48, 3), 90, np.uint8))
    write_png(shots / "holiday.png", np.full((64, 48, 3), 10, np.uint8))
    # Shot on another camera: its correction would fail the studio's resolution rule on the way back in.
    write_png(shots / f"{garment}_FrontRight.png", np.full((60, 48, 3), 120, np.uint8))
    for _ in range(2):  # the same shots cut out twice are queued once
        result = predict.cut_out_folder(
            _reviewing_model(0.99), predict.list_shots(shots)[0], tmp_path / "out", 10**6, queue
        )
    assert result.written == 4 and result.queued == 2
    assert dict(result.not_queued).keys() == {"holiday.png", f"{garment}_FrontRight.png"}
    assert "must be <garment_uuid>_<View>.png" in dict(result.not_queued)["holiday.png"]
    assert dict(result.not_queued)[f"{garment}_FrontRight.png"] == (
        "48x60, expected 48x64 (source studio): a correction of it could not enter the dataset"
    )
    items = queue.items()
    assert sorted(i.file for i in items) == [f"{garment}_Back", f"{garment}_Front"]
    assert all(i.state == "pending" and abs(i.estimate - (1.005 - np.exp(LOG_ERROR))) < 1e-6 for i in items)
    with (tmp_path / "out" / predict.SCORES_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["needs_review"] == "True" for r in rows)

    confident = predict.cut_out_folder(
        _reviewing_model(0.5), predict.list_shots(shots)[0], tmp_path / "o2", 10**6, queue
    )
    assert confident.queued == 0 and confident.not_queued == []
    # Both contract shots logged on each of the three runs (doubtful on the first two); holiday.png, without a
    # contract name, and the shot of another size neither queued nor logged.
    assert sum(r["cutouts"] for r in queue.cutout_stats()) == 2 * 3
    assert sum(r["doubtful"] for r in queue.cutout_stats()) == 2 * 2
    queue.decide(items[0].id, "accept", by="ana")  # cut out once more: one still open, one decided before
    again = predict.cut_out_folder(
        _reviewing_model(0.99), predict.list_shots(shots)[0], tmp_path / "o3", 10**6, queue
    )
    assert (again.queued, again.decided_before) == (1, 1)


def test_predict_refuses_to_write_over_its_shots_and_names_a_model_it_cannot_load(tmp_path):
    from click.testing import CliRunner

    from garmentseg.cli import main

    shots = tmp_path / "out" / "cutouts"
    write_png(shots / "a.png", np.full((64, 48, 3), 200, np.uint8))
    before = (shots / "a.png").read_bytes()
    over = CliRunner().invoke(main, ["predict", "--model-uri", "x", str(shots), str(tmp_path / "out")])
    assert over.exit_code == 2 and "would write over the shots" in over.output
    assert (shots / "a.png").read_bytes() == before
    missing = CliRunner().invoke(
        main, ["predict", "--model-uri", str(tmp_path / "none"), str(shots), str(tmp_path / "o")]
    )
    assert missing.exit_code == 1 and f"model {tmp_path / 'none'}: cannot be loaded" in missing.output
    assert isinstance(missing.exception, SystemExit), "one line, not a traceback"


def test_a_thumbnail_is_skipped_by_name_not_cut_out(tmp_path):
    write_png(tmp_path / "in" / "icon.png", np.full((10, 10, 3), 200, np.uint8))
    result = predict.cut_out_folder(_model(), predict.list_shots(tmp_path / "in")[0], tmp_path / "out", 10**6)
    assert result.written == 0 and result.skipped == [
        ("icon.png", "image is 10x10; a shot needs at least 16 px on each side")
    ]


def test_scores_csv_keeps_an_earlier_runs_rows_and_refuses_a_file_it_did_not_write(tmp_path):
    """Two folders cut out into one OUT: every cutout there keeps its row; a shot cut out again has one."""
    out, image = tmp_path / "out", np.full((64, 48, 3), 200, np.uint8)
    for folder, names in (("monday", ["a.png", "b.png"]), ("tuesday", ["c.png", "b.jpg"])):
        for name in names:
            if name.endswith(".png"):
                write_png(tmp_path / folder / name, image)
            else:  # write_png made the folder
                (tmp_path / folder / name).write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
        predict.cut_out_folder(_model(), predict.list_shots(tmp_path / folder)[0], out, 10**6)
    with (out / predict.SCORES_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["a.png", "b.jpg", "c.png"]
    assert sorted(p.name for p in (out / "cutouts").iterdir()) == ["a.png", "b.png", "c.png"]

    resaved = tmp_path / "resaved"  # predict's own file, re-saved by a spreadsheet as "CSV UTF-8"
    resaved.mkdir()
    (resaved / predict.SCORES_FILE).write_bytes(b"\xef\xbb\xbf" + (out / predict.SCORES_FILE).read_bytes())
    predict.cut_out_folder(_model(), predict.list_shots(tmp_path / "monday")[0], resaved, 10**6)
    with (resaved / predict.SCORES_FILE).open() as fh:
        assert [r["file"] for r in csv.DictReader(fh)] == ["c.png", "a.png", "b.png"]

    for name, content in {
        "semicolons": b"garment;score\nx;1\n",
        "more-columns": b"file,owner,notes\nx.png,ana,keep this\n",
        "utf-16": "file,dice_estimate\n".encode("utf-16"),
    }.items():
        foreign = tmp_path / name
        foreign.mkdir()
        (foreign / predict.SCORES_FILE).write_bytes(content)
        with pytest.raises(predict.ScoresFileError, match=r"not a scores\.csv `garmentseg predict` wrote"):
            predict.cut_out_folder(_model(), predict.list_shots(tmp_path / "monday")[0], foreign, 10**6)
        assert (foreign / predict.SCORES_FILE).read_bytes() == content, name
        assert not (foreign / "cutouts").exists()


def test_a_confident_cutout_of_a_shot_that_could_not_be_queued_is_answered_all_the_same(tmp_path):
    """/cutout?queue=true as predict: only a doubtful cutout of a shot the queue refuses is refused (422)."""
    from garmentseg.config import load_config
    from garmentseg.review.store import ReviewQueue
    from garmentseg.service.errors import RequestError
    from garmentseg.service.responses import Prediction
    from garmentseg.service.review import QueueRequest, cutout_answer

    cfg = load_config(
        "demo",
        overrides={
            "review": {"database": f"sqlite:///{tmp_path}/q.db", "storage_dir": str(tmp_path / "items")}
        },
    )
    request = QueueRequest(ReviewQueue.from_config(cfg), "0b7e7a52-3c59-4d52-9a59-7a1f1f6e2a10_Front")
    image = np.full((64, 48, 3), 200, np.uint8)  # not the studio's 1152x1728
    write_png(tmp_path / "shot.png", image)
    png = (tmp_path / "shot.png").read_bytes()
    for review_below, doubtful in ((0.5, False), (0.99, True)):
        model = _reviewing_model(review_below)
        made = Prediction(model, image, model.predict_maps([image])[0])
        if doubtful:
            with pytest.raises(RequestError, match="48x64, expected 1152x1728") as refused:
                cutout_answer(made, shot=png, queue=request)
            assert refused.value.status == 422
        else:
            assert cutout_answer(made, shot=png, queue=request).headers["X-Needs-Review"] == "false"
    assert request.queue.items() == []

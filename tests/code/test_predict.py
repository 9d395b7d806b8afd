"""Cutting out a folder: which files are shots, what is written for each, and how an unreadable one is named."""

from __future__ import annotations

import csv

import numpy as np

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
    for name in ("b.PNG", "a.jpg", "c.jpeg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "d.png").write_bytes(b"x")
    assert [p.name for p in predict.list_shots(tmp_path)] == ["a.jpg", "b.PNG", "c.jpeg"]


def test_cut_out_folder_writes_cutouts_masks_and_scores_and_names_what_it_skips(tmp_path):
    shots = tmp_path / "in"
    image = np.full((64, 48, 3), 200, np.uint8)
    write_png(shots / "one.png", image)
    write_png(shots / "two.png", image)
    (shots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    result = predict.cut_out_folder(_model(), predict.list_shots(shots), out, max_pixels=10**6)
    assert result.written == 2
    assert [name for name, _ in result.skipped] == ["broken.png"]
    cutout = read_image(out / "cutouts" / "one.png", max_pixels=10**6, alpha=True)
    mask = read_image(out / "masks" / "two.png", max_pixels=10**6)
    assert cutout.shape == (64, 48, 4) and mask.shape[:2] == (64, 48)
    assert cutout[32, 24, 3] == 255 and cutout[2, 2, 3] == 0
    assert np.array_equal(cutout[..., :3], image)
    with (out / predict.SCORES_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["one.png", "two.png"]
    assert all(r["needs_manual_cutout"] == "False" for r in rows)

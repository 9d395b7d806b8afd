"""Cached input-size tensors: shapes, soft masks, training-split statistics, cache keying, resize round trips."""

from __future__ import annotations

import json
from unittest.mock import Mock

import numpy as np
import pytest

from garmentseg import prepare as prep
from garmentseg.inference import preprocess, resize_down, to_mask, upsample_proba
from garmentseg.model.metrics import dice
from tests.model.studio import draw_shot, make_studio


@pytest.fixture
def studio(tmp_path):
    frame = make_studio(tmp_path / "studio", garments=6, height=72, width=48)
    return frame, tmp_path / "studio"


def _prepare(frame, root, cache, **kw):
    return prep.prepare(frame, root, input_height=24, input_width=16, cache_dir=cache, **kw)


def test_prepare_writes_uint8_tensors_per_split_and_train_stats(studio, tmp_path):
    frame, root = studio
    p = _prepare(frame, root, tmp_path / "cache")
    counts = frame["split"].value_counts()
    for split in prep.SPLITS:
        arrays = p.splits[split]
        assert arrays.x.shape == (counts[split], 24, 16, 3) and arrays.x.dtype == np.uint8
        assert arrays.y.shape == (counts[split], 24, 16) and arrays.y.dtype == np.uint8
    # INTER_AREA keeps edge coverage: some mask pixels are partial, the interior is full
    y = p.splits["train"].y
    assert y.max() == 255 and ((y > 0) & (y < 255)).any()
    mean, std = prep.channel_stats(p.splits["train"].x)
    assert p.mean == pytest.approx(mean) and p.std == pytest.approx(std)
    stats = json.loads((tmp_path / "cache" / prep.STATS_FILE).read_text())
    assert stats["index_hash"] == prep.index_hash(frame) and stats["counts"]["train"] == counts["train"]


def test_cache_is_reused_without_decoding_and_rebuilt_when_the_index_changes(studio, tmp_path, monkeypatch):
    frame, root = studio
    first = _prepare(frame, root, tmp_path / "cache")
    decode = Mock(side_effect=AssertionError("the cache should have been used"))
    monkeypatch.setattr(prep, "read_image", decode)
    again = _prepare(frame, root, tmp_path / "cache")
    assert np.array_equal(again.splits["train"].x, first.splits["train"].x)
    decode.assert_not_called()
    moved = frame.copy()
    moved.loc[0, "split"] = "test"
    with pytest.raises(AssertionError, match="cache should have been used"):
        _prepare(moved, root, tmp_path / "cache")


def test_index_hash_ignores_row_order_but_not_content(studio):
    frame, _ = studio
    assert prep.index_hash(frame) == prep.index_hash(frame.sample(frac=1, random_state=1))
    changed = frame.copy()
    changed.loc[3, "cutout_sha256"] = "other"
    assert prep.index_hash(changed) != prep.index_hash(frame)


def test_truth_comes_from_alpha_and_a_cutout_of_another_size_is_refused(studio):
    frame, root = studio
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3, 3] = 255
    assert prep.truth_mask(rgba).sum() == 4
    from garmentseg.imageio import write_png

    row = frame.iloc[0]
    write_png(root / row["cutout_path"], np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="differs from shot"):
        prep.read_pair(root, row, 10**7)


@pytest.mark.parametrize(("height", "width"), [(48, 32), (32, 32)])
def test_resize_round_trip_keeps_the_mask(height, width):
    _, truth = draw_shot(np.random.default_rng(3), 288, 192)
    small = resize_down(truth.astype(np.float32), height, width)  # coverage, like the cached targets
    back = to_mask(upsample_proba(small, 288, 192), 0.5) > 0
    assert back.shape == truth.shape
    assert dice(back, truth) > 0.95


def test_preprocess_normalises_with_the_given_stats():
    image = np.full((30, 20, 3), 51, np.uint8)
    x = preprocess(image, 12, 8, mean=(0.2, 0.1, 0.0), std=(0.5, 0.5, 0.1))
    assert x.shape == (12, 8, 3) and x.dtype == np.float32
    assert x[0, 0] == pytest.approx([0.0, 0.2, 2.0], abs=1e-5)
    with pytest.raises(ValueError, match="RGB image"):
        preprocess(image[..., 0], 12, 8, (0, 0, 0), (1, 1, 1))


def test_prepare_command_caches_a_contract_folder_at_the_profiles_input_size(studio, tmp_path, project_root):
    from click.testing import CliRunner

    from garmentseg.cli import main

    _, root = studio
    env = {
        "GARMENTSEG__PATHS__STATE_DIR": str(tmp_path / "var"),
        "GARMENTSEG__MODEL__INPUT_HEIGHT": "32",
        "GARMENTSEG__MODEL__INPUT_WIDTH": "16",
    }
    args = [
        "prepare",
        "--profile",
        "demo",
        "--params",
        str(project_root / "params.yaml"),
        "--dataset",
        str(root),
    ]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "var" / "prepared" / "32x16" / prep.STATS_FILE).read_text())
    assert (stats["input_height"], stats["input_width"]) == (32, 16) and sum(stats["counts"].values()) > 0
    missing = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "nowhere")], env=env)
    assert missing.exit_code == 2 and "does not exist" in missing.output

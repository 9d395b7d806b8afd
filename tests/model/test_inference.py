"""serving's pure functions: post-processing, the manual-cutout score, and batch shape checks."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from garmentseg import inference


def test_to_mask_and_to_cutout():
    prob = np.array([[0.2, 0.5], [0.7, 0.49]], np.float32)
    mask = inference.to_mask(prob, 0.5)
    assert mask.dtype == np.uint8 and mask.tolist() == [[0, 255], [255, 0]]
    rgba = inference.to_cutout(np.full((2, 2, 3), 9, np.uint8), mask)
    assert rgba.shape == (2, 2, 4) and rgba[..., 3].tolist() == mask.tolist()
    assert rgba[..., 0].tolist() == [[0, 9], [9, 0]]  # the shot's colour only where it is not transparent
    soft = inference.to_cutout(np.full((2, 2, 3), 9, np.uint8), np.array([[0, 1], [128, 255]], np.uint8))
    assert soft[..., 1].tolist() == [[0, 9], [9, 9]]  # a soft edge keeps its colour
    with pytest.raises(ValueError, match="differ in size"):
        inference.to_cutout(np.zeros((3, 2, 3), np.uint8), mask)


def test_upsample_proba_returns_the_original_size_clipped():
    small = np.zeros((8, 6, 1), np.float32)
    small[2:6, 2:4] = 1.0
    big = inference.upsample_proba(small, 80, 60)
    assert big.shape == (80, 60) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0  # INTER_CUBIC overshoots; clipped


def _disc(blur: float) -> np.ndarray:
    yy, xx = np.mgrid[:200, :150]
    r = np.hypot(yy - 100, xx - 75)
    return (1 / (1 + np.exp((r - 50) / blur))).astype(np.float32)


def test_manual_cutout_score_grows_with_doubt_and_flags_empty_masks():
    sharp, soft = inference.manual_cutout_score(_disc(0.5)), inference.manual_cutout_score(_disc(6.0))
    assert 0 < sharp < soft < inference.EMPTY_MASK_SCORE
    assert inference.manual_cutout_score(np.zeros((50, 40), np.float32)) == inference.EMPTY_MASK_SCORE


def test_manual_cutout_score_does_not_depend_on_resolution():
    import cv2

    prob = _disc(3.0)
    double = cv2.resize(prob, (300, 400), interpolation=cv2.INTER_LINEAR)
    assert inference.manual_cutout_score(double) == pytest.approx(
        inference.manual_cutout_score(prob), rel=0.2
    )


def test_predict_small_refuses_a_batch_of_the_wrong_size():
    model = inference.CutoutModel(None, (0.5,) * 3, (0.2,) * 3, input_height=32, input_width=16)
    with pytest.raises(ValueError, match="N x 32 x 16 x 3"):
        model.predict_small(np.zeros((1, 16, 16, 3), np.float32))


def test_importing_serving_does_not_import_tensorflow_or_mlflow():
    import subprocess

    code = (
        "import sys, garmentseg.inference; print([m for m in ('tensorflow', 'mlflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_models_uri_parsing_leaves_run_and_logged_model_uris_alone():
    assert inference.resolve_registered("runs:/abc/model") == (None, None)
    assert inference.resolve_registered("models:/m-0123") == (None, None)


def test_soft_alpha_is_the_pixel_coverage_of_a_straight_edge_and_never_contradicts_the_mask():
    # prob rises 0.1 per column and crosses 0.5 at x = 10.3: pixel 10 (spanning 9.5..10.5) is 20 % garment
    x = np.arange(24, dtype=np.float32)
    prob = np.tile(np.clip(0.5 + 0.1 * (x - 10.3), 0, 1), (6, 1)).astype(np.float32)
    binary = inference.cutout_alpha(prob, 0.5, "binary")
    assert np.array_equal(binary, inference.to_mask(prob, 0.5))
    soft = inference.cutout_alpha(prob, 0.5, "soft")
    assert soft.dtype == np.uint8 and soft[0, 9] == 0 and soft[0, 11] == 255
    assert soft[0, 10] == round(0.2 * 255)
    assert np.array_equal(soft >= 128, binary > 0)
    with pytest.raises(ValueError, match=r"serving\.alpha='feather'"):
        inference.cutout_alpha(prob, 0.5, "feather")


def test_soft_alpha_is_fractional_only_beside_the_outline():
    prob = _disc(6.0)
    soft = inference.cutout_alpha(prob, 0.5, "soft")
    mask = inference.to_mask(prob, 0.5)
    assert np.array_equal(soft >= 128, mask > 0)
    partial = (soft > 0) & (soft < 255)
    assert partial.any() and inference.edge_length(mask) >= 0.5 * partial.sum()
    far = np.abs(np.hypot(*np.mgrid[:200, :150] - np.array([100, 75])[:, None, None]) - 50) > 2
    assert not partial[far].any()


def test_a_model_refines_its_full_resolution_probability_as_its_refinement_says():
    from garmentseg.edges import Refinement, refine_proba

    class Ramp:
        def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
            n, h, w, _ = batch.shape
            return np.broadcast_to(np.linspace(0, 1, w, dtype=np.float32)[None, None, :, None], (n, h, w, 1))

    guided = Refinement("guided", "colour", 4, 1e-3, 2)
    plain = inference.CutoutModel(Ramp(), (0.5,) * 3, (0.25,) * 3, 0.5, 16, 16)
    refined = inference.CutoutModel(Ramp(), (0.5,) * 3, (0.25,) * 3, 0.5, 16, 16, refinement=guided)
    shot = np.zeros((64, 64, 3), np.uint8)
    shot[:, 20:] = 200
    base = plain.predict_proba([shot])[0]
    assert np.array_equal(refined.predict_proba([shot])[0], refine_proba(base, shot, guided))
    assert refined.preprocessing_metadata()[inference.REFINE_KEY] == guided.to_dict()

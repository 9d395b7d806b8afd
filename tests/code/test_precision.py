"""serving.precision: the bf16 twin computes in bfloat16, keeps float32 probabilities and the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from garmentseg.inference import CutoutModel, in_precision
from garmentseg.model.unet import build_arch


def _model() -> CutoutModel:
    net = build_arch("carvana", base_filters=4, depth=2, input_height=32, input_width=48, block="residual")
    return CutoutModel(net, (0.5,) * 3, (0.25,) * 3, 0.5, 32, 48)


def test_float32_is_the_model_itself() -> None:
    model = _model()
    assert in_precision(model, "float32") is model


def test_bfloat16_twin_keeps_weights_and_a_float32_classifier() -> None:
    model = _model()
    twin = in_precision(model, "bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in twin.keras_model.layers}
    assert policies["mask"] == "float32" and policies["down0_conv0"] == "mixed_bfloat16"
    for a, b in zip(model.keras_model.get_weights(), twin.keras_model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    batch = np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)
    full, half = model.predict_small(batch), twin.predict_small(batch)
    assert half.dtype == np.float32 and half.shape == full.shape
    assert 0 < np.abs(full - half).max() < 0.05  # really computed in bf16, and close
    assert (twin.threshold, twin.mean, twin.input_height) == (model.threshold, model.mean, model.input_height)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match=r"serving\.precision"):
        in_precision(_model(), "float16")

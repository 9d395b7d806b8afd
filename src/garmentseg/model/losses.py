"""The seed's loss, 0.5 * BCE + 2 * (1 - Dice), with an optional boundary-weighted BCE term.

The seed wrote `0.5 * BCE - 2 * dice`; `1 - dice` has the same gradient and stays >= 0, which reads better
in curves and lets EarlyStopping's min_delta mean the same thing at any weight.
"""

from __future__ import annotations

from typing import Any

SMOOTH = 1.0  # the seed's Laplace smoothing in dice_coeff
BOUNDARY_KERNEL = 5  # px at input size: the band around the true edge that the boundary term weighs


def dice_coeff(y_true: Any, y_pred: Any) -> Any:
    """Soft Dice over the whole batch, as in the seed (flatten, smooth=1)."""
    from keras import ops

    t = ops.reshape(ops.cast(y_true, "float32"), (-1,))
    p = ops.reshape(ops.cast(y_pred, "float32"), (-1,))
    intersection = ops.sum(t * p)
    return (2.0 * intersection + SMOOTH) / (ops.sum(t) + ops.sum(p) + SMOOTH)


def boundary_band(y_true: Any, kernel: int = BOUNDARY_KERNEL) -> Any:
    """1 on pixels within kernel//2 of the true mask's edge (dilation minus erosion), else 0."""
    from keras import ops

    t = ops.cast(y_true, "float32")
    dilated = ops.max_pool(t, kernel, strides=1, padding="same")
    eroded = -ops.max_pool(-t, kernel, strides=1, padding="same")
    return ops.cast(dilated - eroded > 0.01, "float32")


def boundary_bce(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy averaged over the boundary band only (the seed's "more weight on boundary px")."""
    from keras import ops

    t = ops.cast(y_true, "float32")
    p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
    bce = -(t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p))
    band = boundary_band(t)
    return ops.sum(bce * band) / (ops.sum(band) + 1.0)


def weighted_bce(y_true: Any, y_pred: Any, pos_weight: float = 1.0) -> Any:
    """Mean binary cross-entropy with garment pixels weighted pos_weight times (1 = the plain BCE)."""
    from keras import ops

    t = ops.cast(y_true, "float32")
    p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
    return ops.mean(-(pos_weight * t * ops.log(p) + (1.0 - t) * ops.log(1.0 - p)))


def make_loss(
    w_bce: float = 0.5, w_dice: float = 2.0, w_boundary: float = 0.0, pos_weight: float = 1.0
) -> Any:
    """w_bce * BCE + w_dice * (1 - Dice) [+ w_boundary * boundary BCE], a Keras loss function; pos_weight
    weighs garment pixels in the BCE term (class balance)."""
    from keras import ops

    def bce_dice_loss(y_true: Any, y_pred: Any) -> Any:
        t = ops.cast(y_true, "float32")
        p = ops.cast(y_pred, "float32")
        loss = w_bce * weighted_bce(t, p, pos_weight) + w_dice * (1.0 - dice_coeff(t, p))
        if w_boundary:
            loss = loss + w_boundary * boundary_bce(t, p)
        return loss

    return bce_dice_loss

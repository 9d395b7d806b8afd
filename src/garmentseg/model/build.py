"""The configured U-Net and its compiled training step, from Keras and the config alone.

Training builds its model here, and so does anything that times or inspects that model away from the
training job: a GPU node with Keras on JAX or torch and no TensorFlow (benchmarks/bench_backends.py)
builds exactly the network, loss and optimizer that `garmentseg train` fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from garmentseg.config import Config


def make_optimizer(
    name: str, learning_rate: float, *, scaled: frozenset[str] = frozenset(), lr_scale: float = 1.0
) -> Any:
    """The seed's optimizer; the variables whose paths are in `scaled` step at `lr_scale` x the rate.

    A per-variable rate, not scaled gradients: RMSprop and Adam divide each gradient by its own running
    magnitude, which would undo a gradient scale. The subclass is a plain Python one, so every Keras
    backend takes its `update_step` (TF, JAX and torch's generic path).
    """
    import keras

    classes = {
        "rmsprop": keras.optimizers.RMSprop,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
    }
    if name not in classes:
        raise ValueError(f"training.optimizer={name!r} is not one of {', '.join(classes)}")
    options = {"momentum": 0.9} if name == "sgd" else {}  # the seed's SGD setting
    if lr_scale == 1.0 or not scaled:
        return classes[name](learning_rate, **options)

    class DiscriminativeRate(classes[name]):
        def build(self, variables: list[Any]) -> None:
            super().build(variables)
            self._scaled_indices = {i for i, v in enumerate(variables) if v.path in scaled}

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
            if self._get_variable_index(variable) in self._scaled_indices:
                learning_rate = learning_rate * lr_scale
            return super().update_step(gradient, variable, learning_rate)

    return DiscriminativeRate(learning_rate, **options)


def build_and_compile(cfg: Config) -> Any:
    """The configured U-Net, compiled with the seed's loss and optimizer under the dtype policy the config
    asks for (the caller enters any distribution strategy's scope: training.fit)."""
    import keras

    from garmentseg.model.encoders import encoder_variable_paths
    from garmentseg.model.losses import dice_coeff, make_loss
    from garmentseg.model.unet import build_unet

    loss_cfg = cfg.training.loss
    previous = keras.mixed_precision.global_policy().name
    if cfg.training.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_unet(cfg.model)
        optimizer = make_optimizer(
            cfg.training.optimizer,
            cfg.training.learning_rate,
            scaled=encoder_variable_paths(model),
            lr_scale=cfg.model.encoder_lr_scale,
        )
        model.compile(
            optimizer=optimizer,
            loss=make_loss(loss_cfg.w_bce, loss_cfg.w_dice, loss_cfg.w_boundary, loss_cfg.pos_weight),
            metrics=[dice_coeff],
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model

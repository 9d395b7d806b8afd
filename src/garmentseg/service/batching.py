"""Adaptive batching: the public endpoints shrink a shot to the model's input size, send it through the
batchable /predict_batch endpoint (BentoML groups concurrent calls into one forward pass) and upsample
the probabilities it returns. The wire format is raw array bytes in base64 (exact, ~30x faster than JSON
lists); each item names the model version it was shrunk for, so a hot swap mid-flight is caught (409)."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic import BaseModel

from garmentseg.service.errors import RequestError
from garmentseg.service.responses import Prediction
from garmentseg.service.uploads import read_upload

if TYPE_CHECKING:
    from garmentseg.config import ServingConfig
    from garmentseg.inference import CutoutModel, Maps
    from garmentseg.service.runtime import ModelRuntime

BATCH_ROUTE = "/predict_batch"
T = TypeVar("T")


class SmallImage(BaseModel):
    """One shot shrunk to the model's input size (uint8 RGB), tagged with the model version it was made for."""

    model_version: str
    height: int
    width: int
    data: str


class SmallProba(BaseModel):
    """One probability map at the model's input size (float32), and the version that computed it."""

    model_version: str
    height: int
    width: int
    data: str


def pack(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def unpack(data: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype=dtype).reshape(shape)


def shrink(model: CutoutModel, data: bytes, serving: ServingConfig) -> tuple[np.ndarray, SmallImage]:
    """Uploaded bytes -> the shot, and the item /predict_batch takes for it."""
    from garmentseg.inference import resize_down

    image = read_upload(data, max_bytes=serving.max_request_bytes, max_pixels=serving.max_pixels)
    small = resize_down(image, model.input_height, model.input_width)
    item = SmallImage(
        model_version=model.model_version or "unknown",
        height=small.shape[0],
        width=small.shape[1],
        data=pack(small),
    )
    return image, item


def expand(out: Any, model: CutoutModel, image: np.ndarray) -> Maps:
    """A /predict_batch answer -> the shot's Maps: the model's own, and grown and refined as the model's are."""
    proba = SmallProba.model_validate(out)
    return model.maps(unpack(proba.data, (proba.height, proba.width), np.float32), image)


def forward_small(runtime: ModelRuntime, items: Sequence[SmallImage]) -> list[SmallProba]:
    """The batched forward pass behind /predict_batch: one predict_small per model version in the batch."""
    from garmentseg.inference import normalise

    out: list[SmallProba | None] = [None] * len(items)
    for version in dict.fromkeys(item.model_version for item in items):
        model = runtime.model_for(version)
        idx = [i for i, item in enumerate(items) if item.model_version == version]
        batch = np.stack(
            [
                normalise(
                    unpack(items[i].data, (items[i].height, items[i].width, 3), np.uint8),
                    model.mean,
                    model.std,
                )
                for i in idx
            ]
        )
        prob = runtime.forward(model, batch)
        for i, p in zip(idx, prob, strict=True):
            out[i] = SmallProba(model_version=version, height=p.shape[0], width=p.shape[1], data=pack(p))
    return [p for p in out if p is not None]


async def respond_batched(
    client: Any,
    on_cpu: Callable[..., Awaitable[Any]],
    model: CutoutModel,
    data: bytes,
    render: Callable[[Prediction], T],
    serving: ServingConfig,
) -> T:
    """`responses.respond` with the forward pass through /predict_batch, shared with concurrent callers.

    `client` is the service's own client (BentoML's batching dispatcher), `on_cpu` runs a function on a
    worker thread. A batch shed by the dispatcher (it would miss max_latency_ms) is a 503.
    """
    import bentoml

    image, item = await on_cpu(shrink, model, data, serving)
    try:
        (out,) = await client.predict_batch(items=[item])
    except bentoml.exceptions.ServiceUnavailable:
        raise RequestError(
            503, "overloaded", f"the batch queue is past {serving.max_latency_ms} ms; retry shortly"
        ) from None
    maps = await on_cpu(expand, out, model, image)
    return await on_cpu(render, Prediction(model, image, maps))


def with_token(client: Any, token_env: str) -> Any:
    """The service's own client, sending the API token: /predict_batch is behind the guard too."""
    token = os.environ.get(token_env)
    # default_headers is the dict every session of the client is created with (bentoml 1.4 proxy2)
    if token and "Authorization" not in client.default_headers:
        client.default_headers["Authorization"] = f"Bearer {token}"
    return client

"""The garmentseg Bento: the registry's champion behind /cutout, /mask and /analyze (see README.md here).

A thin adapter: every step (upload checks, preprocess -> model -> postprocess, statistics, hot reload) is a
library function in garmentseg.service_runtime / garmentseg.inference, shared with `garmentseg predict` and
evaluation. Settings come from the `serving:` section of params.yaml ($GARMENTSEG_PROFILE,
$GARMENTSEG_PARAMS, GARMENTSEG__SERVING__<KEY> overrides); the model from $GARMENTSEG_MODEL_URI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import Field, PlainValidator, WithJsonSchema
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.responses import JSONResponse, Response

from garmentseg import service_runtime as rt
from garmentseg.config import load_config

# BentoML owns the logging configuration of its workers; only let the library's INFO lines through.
logging.getLogger("garmentseg").setLevel(os.environ.get("GARMENTSEG_LOG_LEVEL", "INFO"))
CFG = load_config()
SERVING = CFG.serving
BATCH_ROUTE = "/predict_batch"
# Starlette spools each uploaded file to disk past 1 MB: a studio PNG (~5 MB) would be written to disk and
# read back (through a thread hop) before BentoML copies it again. Uploads are already capped at
# max_request_bytes by the guard, so keep them in memory up to that size.
MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, SERVING.max_request_bytes)


def _upload_bytes(value: Any) -> bytes:
    """The uploaded part, kept in memory: BentoML's own Path validator would write it to a temporary file
    for the handler to read back (the guard has already checked it is a file within the limits)."""
    if isinstance(value, UploadFile):
        return value.file.read()
    if isinstance(value, bytes):
        return value
    raise ValueError("the field `image` must be a file")


# Annotated on Path so BentoML documents and parses the field as a multipart file; the value is its bytes.
ImageField = Annotated[
    Path,
    PlainValidator(_upload_bytes),
    WithJsonSchema({"type": "string", "format": "binary"}),
    Field(description="The studio shot (PNG or JPEG), multipart field `image`."),
]
PngOut = Annotated[Path, ContentType("image/png")]


def _instance_attr(name: str) -> Callable[[], Any]:
    def get() -> Any:
        try:
            return getattr(bentoml.get_current_service(), name, None)
        except bentoml.exceptions.BentoMLException:
            return None

    return get


@bentoml.service(
    name="garmentseg",
    workers=SERVING.workers,
    threads=SERVING.threads,
    traffic={"timeout": SERVING.timeout_s, "max_concurrency": SERVING.max_concurrency},
    endpoints={"livez": "/livez", "readyz": "/readyz"},
)
class GarmentCutout:
    """Garment cutouts from studio shots with the registry's champion U-Net."""

    def __init__(self) -> None:
        self.metrics = rt.ServiceMetrics()
        self.runtime = rt.ModelRuntime(
            model_uri=os.environ.get(rt.MODEL_URI_ENV) or SERVING.model_uri,
            tracking_uri=CFG.tracking_uri,
            reload_interval_s=SERVING.reload_interval_s,
            warmup_delay_s=float(os.environ.get(rt.WARMUP_DELAY_ENV, "0")),
            metrics=self.metrics,
            precision=SERVING.precision,
        ).start()
        self._limiter: anyio.CapacityLimiter | None = None

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded and one warm-up inference succeeded."""
        return self.runtime.ready

    @bentoml.on_shutdown
    def stop_watching(self) -> None:
        self.runtime.stop()

    @bentoml.api(route="/cutout")
    async def cutout(self, image: ImageField) -> PngOut:
        """RGBA PNG of the shot's size; alpha is the predicted garment mask (0 or 255)."""
        return await self._answer(image, lambda m, img, prob: _png(rt.cutout_png(m, img, prob)))

    @bentoml.api(route="/mask")
    async def mask(
        self,
        image: ImageField,
        probability: Annotated[
            bool, Field(description="Return the probability map (0..255) instead.")
        ] = False,
    ) -> PngOut:
        """Single-channel PNG of the shot's size: the 0/255 mask, or the 8-bit probability map."""
        return await self._answer(image, lambda m, img, prob: _png(rt.mask_png(m, prob, probability)))

    @bentoml.api(route="/analyze")
    async def analyze(self, image: ImageField) -> dict[str, Any]:
        """Mask statistics (garment fraction, bbox, components), needs-manual-cutout score and flag, model."""
        return await self._answer(image, lambda m, img, prob: JSONResponse(rt.analysis(m, prob)))

    @bentoml.api(
        route=BATCH_ROUTE,
        batchable=True,
        max_batch_size=SERVING.max_batch_size,
        max_latency_ms=SERVING.max_latency_ms,
    )
    def predict_batch(self, items: list[rt.SmallImage]) -> list[rt.SmallProba]:
        """The bare forward pass with adaptive batching: shots at input size -> probabilities at input size.

        Concurrent callers share one forward pass. The public endpoints use it when
        serving.adaptive_batching is on; items name the model version they were resized for.
        """
        return rt.forward_small(self.runtime, items)

    # -- plumbing
    async def _answer(self, image: bytes, render: Callable[..., Response]) -> Response:
        try:
            model = self.runtime.model
            if SERVING.adaptive_batching:
                picture, prob = await self._batched(model, image)
                response = await self._cpu(render, model, picture, prob)
            else:
                response = await self._cpu(self._direct, model, image, render)
        except rt.RequestError as err:
            return JSONResponse(err.body(), status_code=err.status)
        response.headers.update(rt.model_headers(model))
        return response

    def _read(self, data: bytes) -> np.ndarray:
        return rt.read_upload(data, max_bytes=SERVING.max_request_bytes, max_pixels=SERVING.max_pixels)

    def _direct(self, model: Any, data: bytes, render: Callable[..., Response]) -> Response:
        """decode -> model -> encode in one worker-thread hop."""
        picture = self._read(data)
        return render(model, picture, self.runtime.predict_proba(model, picture))

    def _read_small(self, model: Any, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        from garmentseg.inference import resize_down

        picture = self._read(data)
        return picture, resize_down(picture, model.input_height, model.input_width)

    async def _batched(self, model: Any, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        from garmentseg.inference import upsample_proba

        picture, small = await self._cpu(self._read_small, model, data)
        item = rt.SmallImage(
            model_version=model.model_version or "unknown",
            height=small.shape[0],
            width=small.shape[1],
            data=rt.pack(small),
        )
        try:
            (out,) = await self._self_client().predict_batch(items=[item])
        except bentoml.exceptions.ServiceUnavailable:  # the dispatcher sheds what would miss max_latency_ms
            raise rt.RequestError(
                503, "overloaded", f"the batch queue is past {SERVING.max_latency_ms} ms; retry shortly"
            ) from None
        out = rt.SmallProba.model_validate(out)
        prob_small = rt.unpack(out.data, (out.height, out.width), np.float32)
        prob = await self._cpu(upsample_proba, prob_small, picture.shape[0], picture.shape[1])
        return picture, prob

    def _self_client(self) -> Any:
        """This service's in-process client (through BentoML's batching dispatcher), with the API token."""
        client = self.to_async  # set by BentoML once the instance is serving
        token = os.environ.get(SERVING.auth_token_env)
        # default_headers is the dict every session of the client is created with (bentoml 1.4 proxy2)
        if token and "Authorization" not in client.default_headers:
            client.default_headers["Authorization"] = f"Bearer {token}"
        return client

    async def _cpu(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(SERVING.threads)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)


def _png(data: bytes) -> Response:
    return Response(content=data, media_type="image/png")


GarmentCutout.add_asgi_middleware(
    rt.GuardMiddleware,
    routes={
        "/cutout": ("image",),
        "/mask": ("image", "probability"),
        "/analyze": ("image",),
        BATCH_ROUTE: None,
    },
    max_request_bytes=SERVING.max_request_bytes,
    max_pixels=SERVING.max_pixels,
    auth_token_env=SERVING.auth_token_env,
    state=_instance_attr("runtime"),
    metrics=_instance_attr("metrics"),
)

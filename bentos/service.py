"""The garmentseg Bento: the registry's champion behind /cutout, /mask and /analyze (see README.md here).

A thin adapter over `garmentseg.service` (upload rules, the guard, the model runtime, the answers) and
`garmentseg.inference` (the pipeline `garmentseg predict` and evaluation share). Settings come from the
`serving:` section of params.yaml ($GARMENTSEG_PROFILE, $GARMENTSEG_PARAMS, GARMENTSEG__SERVING__<KEY>
overrides); the model from $GARMENTSEG_MODEL_URI.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
from bentoml.validators import ContentType
from pydantic import Field
from starlette.responses import JSONResponse, Response

from garmentseg.config import load_config
from garmentseg.review.store import ReviewQueue
from garmentseg.service import MODEL_URI_ENV, WARMUP_DELAY_ENV, batching, guard, responses, review
from garmentseg.service.errors import RequestError
from garmentseg.service.runtime import ModelRuntime, ServiceMetrics
from garmentseg.service.uploads import Upload, parse_forms_once

# BentoML owns the logging configuration of its workers; only let the library's INFO lines through.
logging.getLogger("garmentseg").setLevel(os.environ.get("GARMENTSEG_LOG_LEVEL", "INFO"))
CFG = load_config()
SERVING = CFG.serving
PngOut = Annotated[Path, ContentType("image/png")]


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
        parse_forms_once(SERVING.max_request_bytes)
        self.metrics = ServiceMetrics()
        self.runtime = ModelRuntime(
            model_uri=os.environ.get(MODEL_URI_ENV) or SERVING.model_uri,
            tracking_uri=CFG.tracking_uri,
            reload_interval_s=SERVING.reload_interval_s,
            warmup_delay_s=float(os.environ.get(WARMUP_DELAY_ENV, "0")),
            metrics=self.metrics,
            precision=SERVING.precision,
        ).start()
        self.cpu = anyio.CapacityLimiter(SERVING.threads)
        self.review_queue: ReviewQueue | None = None  # opened (and migrated) by the first ?queue=true

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded and one warm-up inference succeeded."""
        return self.runtime.ready

    @bentoml.on_shutdown
    def stop_watching(self) -> None:
        self.runtime.stop()

    @bentoml.api(route="/cutout")
    async def cutout(self, image: Upload, ctx: bentoml.Context) -> PngOut:
        """RGBA PNG of the shot's size; alpha is the predicted garment mask (0/255, or with serving.alpha soft
        its outline anti-aliased over one pixel), colour only where alpha > 0. Headers X-Dice-Estimate
        and X-Needs-Review judge it; `?queue=true` also queues a doubtful one for review (the upload's
        filename must be `<garment_uuid>_<View>.png`)."""
        try:
            queue = await self.queue_request(ctx, getattr(image, "filename", None))
        except RequestError as err:
            response = self.refusal("/cutout", err)
        else:
            render = functools.partial(review.cutout_answer, shot=image, queue=queue, alpha=SERVING.alpha)
            response = await self.answer("/cutout", image, render)
        ctx.response.status_code = response.status_code  # BentoML sets ctx's status on an API taking ctx
        return response

    @bentoml.api(route="/mask")
    async def mask(
        self,
        image: Upload,
        probability: Annotated[
            bool, Field(description="Return the probability map (0..255) instead.")
        ] = False,
    ) -> PngOut:
        """Single-channel PNG of the shot's size: the 0/255 mask, or the 8-bit probability map."""
        return await self.answer(
            "/mask", image, functools.partial(responses.mask_png, probability=probability)
        )

    @bentoml.api(route="/analyze")
    async def analyze(self, image: Upload) -> dict[str, Any]:
        """Mask statistics (garment fraction, bbox, components), needs-manual-cutout score and flag, model."""
        return await self.answer("/analyze", image, responses.analysis)

    @bentoml.api(
        route=batching.BATCH_ROUTE,
        batchable=True,
        max_batch_size=SERVING.max_batch_size,
        max_latency_ms=SERVING.max_latency_ms,
    )
    def predict_batch(self, items: list[batching.SmallImage]) -> list[batching.SmallProba]:
        """The bare forward pass with adaptive batching: shots at input size -> probabilities at input size.

        Concurrent callers share one forward pass; the public endpoints use it when serving.adaptive_batching
        is on. Items name the model version they were resized for.
        """
        return batching.forward_small(self.runtime, items)

    async def queue_request(self, ctx: bentoml.Context, filename: str | None) -> review.QueueRequest | None:
        """The review queue and the shot's name when the caller asked for ?queue=true, else None."""
        if not review.wants_queue(ctx.request.query_params.get("queue")):
            return None
        file = review.queued_file(filename, self.runtime.model)  # refused before the database is opened
        if self.review_queue is None:
            self.review_queue = await self.on_cpu(ReviewQueue.from_config, CFG)
        return review.QueueRequest(self.review_queue, file)

    async def answer(
        self, route: str, image: bytes, render: Callable[[responses.Prediction], Any]
    ) -> Response:
        """The model's answer to one upload (PNG bytes or JSON), or the refusal's JSON, with the model headers."""
        try:
            model = self.runtime.model
            if SERVING.adaptive_batching:
                client = batching.with_token(self.to_async, SERVING.auth_token_env)
                body = await batching.respond_batched(client, self.on_cpu, model, image, render, SERVING)
            else:
                body = await self.on_cpu(responses.respond, self.runtime, model, image, render, SERVING)
        except RequestError as err:
            return self.refusal(route, err)
        if isinstance(body, review.Rendered):
            answer = Response(body.body, media_type="image/png", headers=body.headers)
        else:
            answer = Response(body, media_type="image/png") if isinstance(body, bytes) else JSONResponse(body)
        answer.headers.update(responses.model_headers(model))
        return answer

    def refusal(self, route: str, err: RequestError) -> JSONResponse:
        self.metrics.reject(route, err)
        return JSONResponse(err.body(), status_code=err.status)

    async def on_cpu(self, func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=self.cpu)


GarmentCutout.add_asgi_middleware(
    guard.GuardMiddleware,
    routes={**dict.fromkeys(("/cutout", "/mask", "/analyze"), guard.FORM), batching.BATCH_ROUTE: guard.JSON},
    max_request_bytes=SERVING.max_request_bytes,
    auth_token_env=SERVING.auth_token_env,
    runtime=guard.service_attribute("runtime"),
    metrics=guard.service_attribute("metrics"),
)

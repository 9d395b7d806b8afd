"""What the Bento service needs from the library, and what deploy steps need from a running service.

Inside the service: upload validation (sizes checked from the header before decoding, every refusal a
4xx with a JSON body), the three endpoints' pipelines (`garmentseg.inference` functions, so serving and
evaluation cannot drift), mask statistics, Prometheus metrics, and `ModelRuntime`, which loads the champion
off the request path and hot-swaps it when the registry alias moves.

Outside it: `service_env` / `serve_command` (how `garmentseg serve` and tests start `bentoml serve`),
`running_service` (a context manager yielding the base URL), `wait_for_version` (the deploy step waits
until the service reports the promoted version) and `serving_check` (the Airflow smoke test).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from garmentseg.imageio import ImageError, check_size, decode, encode_png, read_header

if TYPE_CHECKING:
    from garmentseg.config import Config
    from garmentseg.inference import CutoutModel

log = logging.getLogger(__name__)

MODEL_URI_ENV = "GARMENTSEG_MODEL_URI"
# Seconds to sleep before the warm-up inference, so tests can observe /readyz flipping; never set in production.
WARMUP_DELAY_ENV = "GARMENTSEG_WARMUP_DELAY_S"
SERVICE_DIR = Path(__file__).resolve().parents[2] / "bentos"
SERVICE_TARGET = "service:GarmentCutout"
# A model that failed to load is retried this often (seconds) while /readyz stays 503.
RETRY_LOAD_S = 5.0
# Bytes of an uploaded part kept for the header check before the body reaches BentoML's parser.
HEAD_BYTES = 65536
HEADER_NAME, HEADER_VERSION = "X-Model-Name", "X-Model-Version"
# ImageError.kind -> HTTP status: a non-image is an unsupported media type, a too-large one is too large.
KIND_STATUS = {"empty": 400, "truncated": 400, "corrupt": 400, "not_image": 415, "too_large": 413}


class RequestError(Exception):
    """A request the service refuses; becomes `status` with body {"error": code, "message": ...}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "status": self.status}


class NotReady(RequestError):
    def __init__(self, message: str = "the model is still loading; retry when /readyz is 200"):
        super().__init__(503, "not_ready", message)


# ------------------------------------------------------------------------------------------- request side
def read_upload(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> RGB uint8, refusing empty, oversized, non-image, bomb and corrupt files (4xx)."""
    if len(data) > max_bytes:
        raise RequestError(413, "too_large", f"upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        check_size(read_header(data), max_pixels)
        return decode(data, max_pixels=max_pixels)
    except ImageError as exc:
        raise RequestError(KIND_STATUS.get(exc.kind, 400), exc.kind, f"image: {exc}") from None


def mask_stats(mask: np.ndarray) -> dict[str, Any]:
    """Garment fraction, bounding box and connected components of a uint8 0/255 mask."""
    import cv2

    binary = (mask > 0).astype(np.uint8)
    h, w = binary.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True)
    total = int(binary.sum())
    bbox = None
    if total:
        ys, xs = np.nonzero(binary.any(axis=1))[0], np.nonzero(binary.any(axis=0))[0]
        bbox = {
            "x": int(xs[0]),
            "y": int(ys[0]),
            "width": int(xs[-1] - xs[0] + 1),
            "height": int(ys[-1] - ys[0] + 1),
        }
    return {
        "width": w,
        "height": h,
        "garment_fraction": total / float(h * w),
        "bbox": bbox,
        "components": count - 1,
        "largest_component_fraction": (areas[0] / total) if total else 0.0,
    }


def model_headers(model: CutoutModel | None) -> dict[str, str]:
    if model is None:
        return {}
    return {HEADER_NAME: model.model_name or "unregistered", HEADER_VERSION: model.model_version or "unknown"}


def cutout_png(model: CutoutModel, image: np.ndarray, prob: np.ndarray) -> bytes:
    """RGBA PNG whose alpha is the thresholded mask: what `garmentseg predict` writes."""
    from garmentseg.inference import to_cutout, to_mask

    return encode_png(to_cutout(image, to_mask(prob, model.threshold)))


def mask_png(model: CutoutModel, prob: np.ndarray, probability: bool) -> bytes:
    """Single-channel PNG: the 0/255 mask, or with `probability` the map scaled to 0..255."""
    from garmentseg.inference import to_mask

    if probability:
        return encode_png(np.rint(prob * 255.0).astype(np.uint8))
    return encode_png(to_mask(prob, model.threshold))


def analysis(model: CutoutModel, prob: np.ndarray) -> dict[str, Any]:
    """The /analyze body: mask statistics, the needs-manual-cutout score and flag, the model."""
    from garmentseg.inference import to_mask

    score, flagged = model.needs_manual_cutout(prob)
    return {
        **mask_stats(to_mask(prob, model.threshold)),
        "manual_cutout_score": score,
        "needs_manual_cutout": bool(flagged),
        "flag_threshold": model.flag_threshold,
        "threshold": model.threshold,
        "model_name": model.model_name,
        "model_version": model.model_version,
    }


@dataclass
class FormPart:
    name: str
    filename: str | None
    size: int = 0
    head: bytes = b""  # the first bytes: enough for the PNG IHDR / most JPEG SOF markers


def parse_form(body: bytes, content_type: str) -> list[FormPart]:
    """The parts of a multipart/form-data body (names, filenames, sizes, first bytes); 400 when malformed."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "bad_multipart", "multipart/form-data without a boundary parameter")
    parts: list[FormPart] = []
    header: dict[str, bytes] = {}
    field_name: list[bytes] = []
    field_value: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.append(data[start:end])

    def on_header_end() -> None:
        header[b"".join(field_name).decode("latin-1").lower()] = b"".join(field_value)
        field_name.clear()
        field_value.clear()

    def on_headers_finished() -> None:
        _, disp = parse_options_header(header.get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        parts.append(FormPart(name, None if filename is None else filename.decode("utf-8", "replace")))
        header.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        if len(part.head) < HEAD_BYTES:
            part.head += data[start : min(end, start + HEAD_BYTES - len(part.head))]
        part.size += end - start

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise RequestError(400, "bad_multipart", f"malformed multipart/form-data body: {exc}") from None
    if not parts:
        raise RequestError(400, "bad_multipart", "multipart/form-data body has no parts")
    return parts


def check_form(
    parts: Sequence[FormPart], *, file_field: str, allowed: Sequence[str], max_pixels: int
) -> None:
    """Exactly one file in `file_field`, no unknown fields, and an image header within max_pixels."""
    names = [p.name for p in parts]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise RequestError(
            400, "unexpected_field", f"unexpected form field(s) {unknown}; allowed: {list(allowed)}"
        )
    files = [p for p in parts if p.name == file_field]
    if not files:
        raise RequestError(
            400, "missing_field", f"form field {file_field!r} with the image is missing (got {names})"
        )
    if len(files) > 1:
        raise RequestError(400, "duplicate_field", f"send one image in {file_field!r}, got {len(files)}")
    image = files[0]
    if image.filename is None:
        raise RequestError(
            400, "not_a_file", f"form field {file_field!r} must be a file upload (with a filename)"
        )
    if image.size == 0:
        raise RequestError(400, "empty", f"{file_field}: zero-byte file")
    try:
        check_size(read_header(image.head), max_pixels)
    except ImageError as exc:
        if exc.kind == "truncated" and image.size > len(image.head):
            return  # a JPEG whose frame header comes after large metadata: decode() checks it again
        raise RequestError(KIND_STATUS.get(exc.kind, 400), exc.kind, f"{file_field}: {exc}") from None


# The adaptive-batching endpoint's wire format: raw array bytes in base64 (exact, ~30x faster than JSON lists).
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


# ------------------------------------------------------------------------------------------------- metrics
class ServiceMetrics:
    """Prometheus series beside BentoML's own (request latency and status by endpoint, batch sizes)."""

    def __init__(self) -> None:
        from bentoml import metrics

        self.model_info = metrics.Gauge(
            name="garmentseg_model_info",
            documentation="1 for the model version this worker serves, 0 for versions it served before",
            labelnames=["model_name", "model_version", "model_uri"],
            multiprocess_mode="livemax",
        )
        self.ready = metrics.Gauge(
            name="garmentseg_model_ready",
            documentation="1 once the model is loaded and warmed up",
            multiprocess_mode="livemin",
        )
        self.reloads = metrics.Counter(
            name="garmentseg_model_reloads",
            documentation="model (re)loads by result",
            labelnames=["result"],
        )
        self.rejected = metrics.Counter(
            name="garmentseg_rejected_requests",
            documentation="requests refused before inference, by endpoint, status and reason",
            labelnames=["endpoint", "status", "reason"],
        )
        self.model_seconds = metrics.Histogram(
            name="garmentseg_model_seconds",
            documentation="model call duration; direct: resize + forward + upsample of one shot, "
            "batched: one forward pass of an adaptive batch",
            labelnames=["mode"],
            buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
        )
        self.forward_batch = metrics.Histogram(
            name="garmentseg_forward_batch_size",
            documentation="images per model forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )

    def on_model(self, old: CutoutModel | None, new: CutoutModel) -> None:
        if old is not None:
            self.model_info.labels(*_info_labels(old)).set(0)
        self.model_info.labels(*_info_labels(new)).set(1)
        self.ready.set(1)


def _info_labels(model: CutoutModel) -> tuple[str, str, str]:
    return model.model_name or "unregistered", model.model_version or "unknown", model.model_uri or ""


# ---------------------------------------------------------------------------------------- the model runtime
def warm_up(model: CutoutModel) -> None:
    """One full inference on a mid-grey shot; raises unless the probabilities are finite and in [0, 1]."""
    shot = np.full((model.input_height * 2, model.input_width * 2, 3), 128, np.uint8)
    prob = model.predict_proba([shot])[0]
    if prob.shape != shot.shape[:2] or not np.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise RuntimeError(f"{model.model_uri}: warm-up produced invalid probabilities")


@dataclass
class ModelRuntime:
    """The model the service answers with, loaded and warmed off the request path, hot-swapped on alias moves.

    A request takes `runtime.model` once and uses that object to the end, so a swap (one reference
    assignment) never changes the model under a request in flight; the old model is freed when the last
    such request drops it. The previous model is kept for the batching endpoint, whose items name the
    version they were preprocessed for.
    """

    model_uri: str
    tracking_uri: str | None
    reload_interval_s: float
    warmup_delay_s: float = 0.0
    metrics: ServiceMetrics | None = None
    loader: Callable[..., CutoutModel] | None = None
    precision: str = "float32"  # serving.precision: what the forward pass computes in
    _current: CutoutModel | None = None
    _previous: CutoutModel | None = None
    _error: str | None = None
    _loaded_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _forward_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def follows_alias(self) -> bool:
        return "@" in self.model_uri and self.model_uri.startswith("models:/")

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def model(self) -> CutoutModel:
        model = self._current
        if model is None:
            raise NotReady() if self._error is None else NotReady(f"model not loaded: {self._error}")
        return model

    def model_for(self, version: str) -> CutoutModel:
        for model in (self._current, self._previous):
            if model is not None and (model.model_version or "unknown") == version:
                return model
        raise RequestError(409, "model_changed", f"model version {version} is no longer loaded; retry")

    def state(self) -> dict[str, Any]:
        model = self._current
        return {
            "ready": model is not None,
            "model_name": model.model_name if model else None,
            "model_version": model.model_version if model else None,
            "model_uri": self.model_uri,
            "resolved_uri": model.model_uri if model else None,
            "threshold": model.threshold if model else None,
            "input_size": [model.input_height, model.input_width] if model else None,
            "follows_alias": self.follows_alias,
            "reload_interval_s": self.reload_interval_s,
            "loaded_at": self._loaded_at,
            "error": self._error,
        }

    def forward(self, model: CutoutModel, batch: np.ndarray) -> np.ndarray:
        """The batched forward pass (flip TTA as the model says), timed and counted."""
        start = time.perf_counter()
        prob = model.predict_small_tta(batch)
        self._observe("batched", start, len(batch))
        return prob

    def predict_proba(self, model: CutoutModel, image: np.ndarray) -> np.ndarray:
        """The library pipeline for one shot (model.predict_proba), timed and counted."""
        start = time.perf_counter()
        prob = model.predict_proba([image])[0]
        self._observe("direct", start, 1)
        return prob

    def _observe(self, mode: str, start: float, batch_size: int) -> None:
        if self.metrics is not None:
            self.metrics.model_seconds.labels(mode).observe(time.perf_counter() - start)
            self.metrics.forward_batch.observe(batch_size)

    # -- loading and swapping
    def _load(self, uri: str) -> CutoutModel:
        from garmentseg.inference import in_precision, load_cutout_model

        model = in_precision(
            (self.loader or load_cutout_model)(uri, tracking_uri=self.tracking_uri), self.precision
        )
        if self.warmup_delay_s:
            time.sleep(self.warmup_delay_s)
        warm_up(model)
        return model

    def _swap(self, new: CutoutModel) -> None:
        old = self._current
        self._previous, self._current = old, new
        self._loaded_at, self._error = time.time(), None
        if self.metrics is not None:
            self.metrics.on_model(old, new)
            self.metrics.reloads.labels("ok").inc()
        log.info(
            "serving %s v%s (%s)%s",
            new.model_name,
            new.model_version,
            new.model_uri,
            f", was v{old.model_version}" if old else "",
        )

    def _target(self) -> str | None:
        """The pinned URI the alias points to now, or None when it is what we already serve."""
        from garmentseg.inference import resolve_registered

        name, version = resolve_registered(self.model_uri, self.tracking_uri)
        current = self._current
        if current is not None and current.model_version == version:
            return None
        return f"models:/{name}/{version}"

    def poll_once(self) -> bool:
        """Load and swap in what model_uri points to if it changed; True when a new model now serves."""
        try:
            if self._current is None:
                uri = self._target() if self.follows_alias else self.model_uri
            elif self.follows_alias:
                uri = self._target()
            else:
                return False
            if uri is None:
                return False
            self._swap(self._load(uri))
            return True
        except Exception as exc:  # keep serving the current model; the next poll retries
            self._error = f"{type(exc).__name__}: {exc}"
            log.exception("loading %s failed; still serving %s", self.model_uri, self.state()["resolved_uri"])
            if self.metrics is not None:
                self.metrics.reloads.labels("error").inc()
            return False

    def _run(self) -> None:
        watching = self.follows_alias and self.reload_interval_s > 0
        while not self._stop.is_set():
            self.poll_once()
            if self._current is not None and not watching:
                return
            self._stop.wait(self.reload_interval_s if self._current is not None else RETRY_LOAD_S)

    def start(self) -> ModelRuntime:
        """Load in a background thread (the server answers /livez meanwhile), then keep watching the alias."""
        self._thread = threading.Thread(target=self._run, name="garmentseg-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------------------------- the ASGI guard layer
class GuardMiddleware:
    """Auth, content type, size and form checks in front of the API routes; model headers on every response.

    Everything a client can get wrong is refused here, before BentoML's own parser sees the body: the size
    limit on Content-Length and on the bytes actually streamed (chunked uploads), the multipart form (the
    field `image` holds one file whose PNG/JPEG header is within max_pixels). Each refusal is a 4xx whose
    JSON body names the rule. `routes` maps each API path to its form fields; None means a JSON body.
    """

    def __init__(
        self,
        app: Any,
        *,
        routes: dict[str, Sequence[str] | None],
        file_field: str = "image",
        max_request_bytes: int,
        max_pixels: int,
        auth_token_env: str,
        state: Callable[[], ModelRuntime | None],
        metrics: Callable[[], ServiceMetrics | None] = lambda: None,
    ):
        self.app = app
        self.routes = dict(routes)
        self.file_field = file_field
        self.max_bytes = max_request_bytes
        self.max_pixels = max_pixels
        self.token = os.environ.get(auth_token_env) or None
        self.token_env = auth_token_env
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        runtime = self.state()
        if path == "/version":
            await self._send_json(send, 200, runtime.state() if runtime else {"ready": False})
            return
        send = self._with_model_headers(send, runtime)
        if path == "/docs.json":
            await self.app(scope, receive, self._documenting(send))
            return
        if path not in self.routes:
            await self.app(scope, receive, send)
            return
        try:
            if scope.get("method") != "POST":
                raise RequestError(405, "method_not_allowed", f"{path} takes POST, not {scope.get('method')}")
            self._check_auth(scope)
            content_type = self._check_content_type(scope, path)
            body = await self._read_body(scope, receive)
            fields = self.routes[path]
            if fields is not None:
                parts = parse_form(body, content_type)
                check_form(parts, file_field=self.file_field, allowed=fields, max_pixels=self.max_pixels)
        except RequestError as err:
            if (metrics := self.metrics()) is not None:
                metrics.rejected.labels(path, str(err.status), err.code).inc()
            await self._send_json(send, err.status, err.body())
            return
        await self.app(scope, _replay(body), send)

    def _check_auth(self, scope: dict[str, Any]) -> None:
        if self.token is None:
            return
        import hmac

        supplied = _header(scope, b"authorization") or ""
        scheme, _, token = supplied.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise RequestError(
                401, "unauthorized", f"send 'Authorization: Bearer <token>' (the ${self.token_env} token)"
            )

    def _check_content_type(self, scope: dict[str, Any], path: str) -> str:
        content_type = _header(scope, b"content-type") or ""
        media = content_type.split(";")[0].strip().lower()
        wanted = "application/json" if self.routes[path] is None else "multipart/form-data"
        if media != wanted:
            raise RequestError(
                415,
                "unsupported_media_type",
                f"Content-Type is {media or 'missing'!r}; {path} takes {wanted}"
                + (
                    ""
                    if wanted == "application/json"
                    else f" with the image in the field {self.file_field!r}"
                ),
            )
        return content_type

    async def _read_body(self, scope: dict[str, Any], receive: Callable) -> bytes:
        declared = _header(scope, b"content-length")
        limit_msg = f"the request limit is {self.max_bytes} bytes"
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(400, "bad_request", f"Content-Length {declared!r} is not a number")
            if int(declared) > self.max_bytes:
                raise RequestError(413, "too_large", f"request body is {declared} bytes; {limit_msg}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "disconnected", "client disconnected mid-upload")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise RequestError(
                    413, "too_large", f"request body exceeds {self.max_bytes} bytes; {limit_msg}"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _documenting(self, send: Callable) -> Callable:
        """Rewrite BentoML's /docs.json answer with document_guard (the body comes whole, then is sent)."""
        import json

        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        documented = [route for route, fields in self.routes.items() if fields is not None]

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                body = json.dumps(document_guard(json.loads(body), documented)).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return wrapped

    def _with_model_headers(self, send: Callable, runtime: ModelRuntime | None) -> Callable:
        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and runtime is not None and runtime.ready:
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in model_headers(runtime._current).items():
                    if key.lower().encode() not in present:
                        headers.append((key.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped

    @staticmethod
    async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
        import json

        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


# What the guard answers, by status, for the OpenAPI document (BentoML only lists its own 400/404/500).
GUARD_RESPONSES = {
    "400": "Empty, truncated or corrupt image; malformed multipart form; missing or unexpected field",
    "401": "Missing or wrong bearer token (only when the service's token variable is set)",
    "413": "Body over serving.max_request_bytes, or image over serving.max_pixels (checked in its header)",
    "415": "Not a PNG/JPEG, or not multipart/form-data",
    "503": "The model is still loading (see /readyz)",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message", "status"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable reason, e.g. not_image, too_large"},
        "message": {"type": "string", "description": "what is wrong with the request, in words"},
        "status": {"type": "integer"},
    },
}


def document_guard(spec: dict[str, Any], routes: Sequence[str]) -> dict[str, Any]:
    """The service's OpenAPI document with the guard's JSON errors and the model headers on `routes`."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["GarmentsegError"] = ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/GarmentsegError"}}}
    headers = {
        name: {"description": what, "schema": {"type": "string"}}
        for name, what in (
            (HEADER_NAME, "registered name of the model that answered"),
            (HEADER_VERSION, "registry version of the model that answered"),
        )
    }
    for route in routes:
        operation = spec.get("paths", {}).get(route, {}).get("post")
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status, what in GUARD_RESPONSES.items():
            responses[status] = {"description": what, "content": error, "headers": headers}
        if "200" in responses:
            responses["200"]["headers"] = headers
    return spec


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _replay(body: bytes) -> Callable:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


# ------------------------------------------------------------------------------------------ the client side
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pin_model_uri(model_uri: str, tracking_uri: str | None) -> str:
    """models:/name@alias and models:/name/latest -> models:/name/<version they point to now>; a numbered
    version or a non-registry URI (runs:/, models:/m-<id>) is already fixed and comes back unchanged."""
    from garmentseg.inference import resolve_registered

    name, version = resolve_registered(model_uri, tracking_uri)
    if name is None or version is None:
        return model_uri
    return f"models:/{name}/{version}"


def service_env(cfg: Config, model_uri: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a `bentoml serve` process serving `model_uri` (default cfg.serving.model_uri)."""
    env = {
        **os.environ,
        MODEL_URI_ENV: model_uri or os.environ.get(MODEL_URI_ENV) or cfg.serving.model_uri,
        "GARMENTSEG_PROFILE": cfg.profile,
        "GARMENTSEG_PARAMS": str(cfg.root / "params.yaml"),
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "BENTOML_DO_NOT_TRACK": "True",
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    env.update(extra)
    return env


def serve_command(host: str, port: int) -> list[str]:
    """`bentoml serve` of bentos/service.py with this interpreter (so the project's environment is used)."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_TARGET,
        "--working-dir",
        str(SERVICE_DIR),
        "--host",
        host,
        "--port",
        str(port),
    ]


def start_service(cfg: Config, model_uri: str | None, host: str, port: int, **popen: Any) -> subprocess.Popen:
    """Start `bentoml serve` in its own process group (so stop_service ends it and all its workers)."""
    env = popen.pop("env", None) or service_env(cfg, model_uri)
    return subprocess.Popen(serve_command(host, port), env=env, start_new_session=True, **popen)


def stop_service(proc: subprocess.Popen, timeout_s: float = 30) -> int:
    """SIGTERM the service's process group, SIGKILL after timeout_s; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return int(proc.returncode)


def wait_ready(url: str, timeout_s: float = 180, proc: subprocess.Popen | None = None) -> dict[str, Any]:
    """Block until GET /readyz is 200; returns /version. Raises if the process dies or the model fails."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"service at {url} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return httpx.get(f"{url}/version", timeout=5).json()
            last = str(httpx.get(f"{url}/version", timeout=5).json().get("error") or "loading")
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}"
        time.sleep(0.5)
    raise TimeoutError(f"service at {url} not ready after {timeout_s:.0f}s ({last})")


def wait_for_version(
    url: str, version: str, timeout_s: float = 120, interval_s: float = 1.0
) -> dict[str, Any]:
    """Block until the service at `url` answers with model `version` (its X-Model-Version); returns /version.

    The deploy step calls this after promoting, so "deployed" means "answering with the new version".
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5)
            seen = resp.headers.get(HEADER_VERSION)
            if resp.status_code == 200 and seen == str(version):
                return httpx.get(f"{url.rstrip('/')}/version", timeout=5).json()
        time.sleep(interval_s)
    raise TimeoutError(f"{url} still serves version {seen} after {timeout_s:.0f}s; expected {version}")


@contextlib.contextmanager
def running_service(
    cfg: Config,
    model_uri: str | None = None,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180,
    log_file: Path | None = None,
) -> Iterator[str]:
    """Start the real Bento server on a free loopback port with that model, wait for /readyz, yield its URL."""
    port = port or free_port(host)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = start_service(
        cfg,
        model_uri,
        host,
        port,
        env={**service_env(cfg, model_uri), **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{host}:{port}"
    try:
        wait_ready(url, ready_timeout_s, proc)
        yield url
    finally:
        stop_service(proc)
        if log_file:
            out.close()


def serving_check(
    cfg: Config,
    model_uri: str,
    images: Sequence[Path | bytes],
    latency_budget_ms: float | None = None,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    """Smoke-test `model_uri` behind the real service: every shot gets an RGBA cutout of its own size,
    within the latency budget (p95, default cfg.serving.latency_budget_ms). Returns a JSON-ready report
    whose `passed` says whether the deploy may go on."""
    import httpx

    budget = float(latency_budget_ms or cfg.serving.latency_budget_ms)
    token = token or os.environ.get(cfg.serving.auth_token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    problems: list[str] = []
    latencies: list[float] = []
    with running_service(cfg, model_uri) as url:
        info = httpx.get(f"{url}/version", timeout=10).json()
        for i, item in enumerate(images):
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            label = f"image {i}" if isinstance(item, bytes) else str(item)
            expected = read_header(data)
            start = time.perf_counter()
            resp = httpx.post(f"{url}/cutout", files={"image": ("shot", data)}, headers=headers, timeout=60)
            latencies.append(1000 * (time.perf_counter() - start))
            if resp.status_code != 200:
                problems.append(f"{label}: HTTP {resp.status_code}: {resp.text[:200]}")
                continue
            out = decode(resp.content, max_pixels=cfg.serving.max_pixels, alpha=True)
            head = read_header(resp.content)
            if not head.has_alpha or out.shape[:2] != (expected.height, expected.width):
                problems.append(
                    f"{label}: cutout {out.shape[1]}x{out.shape[0]} alpha={head.has_alpha}; "
                    f"expected RGBA {expected.width}x{expected.height}"
                )
            if resp.headers.get(HEADER_VERSION) != info.get("model_version"):
                problems.append(
                    f"{label}: header version {resp.headers.get(HEADER_VERSION)} != {info.get('model_version')}"
                )
    p95 = float(np.percentile(latencies, 95)) if latencies else float("nan")
    if not images:
        problems.append("no images to check")
    elif p95 > budget:
        problems.append(f"p95 latency {p95:.0f} ms exceeds the budget of {budget:.0f} ms")
    return {
        "passed": not problems,
        "reason": "; ".join(problems) or "all shots cut out within the budget",
        "model_uri": model_uri,
        "model_name": info.get("model_name"),
        "model_version": info.get("model_version"),
        "n_images": len(images),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies else None,
            "p95": p95 if latencies else None,
            "max": max(latencies) if latencies else None,
        },
        "latency_budget_ms": budget,
        "problems": problems,
    }


# ----------------------------------------------------------------------------------------------- deploying
def build_bento(cfg: Config, model_uri: str | None = None) -> tuple[str, str]:
    """Build the Bento from bentos/bentofile.yaml with the model pinned: models:/name@champion is resolved to
    models:/name/<version> and baked into the Bento's environment, so the image never changes model by
    itself. Returns (bento tag, pinned model URI). Needs the garmentseg wheel in dist/ (`uv build --wheel`)."""
    import tempfile

    import bentoml
    import yaml

    pinned = pin_model_uri(model_uri or cfg.serving.model_uri, cfg.tracking_uri)
    spec = yaml.safe_load((SERVICE_DIR / "bentofile.yaml").read_text())
    envs = [e for e in spec.get("envs", []) if e.get("name") not in (MODEL_URI_ENV, "GARMENTSEG_PROFILE")]
    spec["envs"] = [
        *envs,
        {"name": MODEL_URI_ENV, "value": pinned},
        {"name": "GARMENTSEG_PROFILE", "value": cfg.profile},
    ]
    spec["labels"] = {**spec.get("labels", {}), "model": pinned.removeprefix("models:/").replace("/", "-")}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=SERVICE_DIR) as pinned_file:
        yaml.safe_dump(spec, pinned_file)
        pinned_file.flush()
        bento = bentoml.bentos.build_bentofile(pinned_file.name, build_ctx=str(cfg.root))
    log.info("built Bento %s serving %s", bento.tag, pinned)
    return str(bento.tag), pinned


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/livez", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def deploy(
    cfg: Config, model_uri: str, *, url: str | None = None, timeout_s: float | None = None
) -> dict[str, Any]:
    """Roll out `model_uri` (models:/name/<version>, already the champion): build the Bento pinned to it when
    the wheel is in dist/, and wait until the running service (`url`, default serving.host:port), which
    follows the alias, answers with that version. Returns what happened, for the next task."""
    from garmentseg.inference import resolve_registered

    name, version = resolve_registered(model_uri, cfg.tracking_uri)
    result: dict[str, Any] = {"model_uri": model_uri, "model_name": name, "model_version": version}
    wheels = sorted((cfg.root / "dist").glob("garmentseg-*.whl"))
    if wheels:
        result["bento"], _ = build_bento(cfg, model_uri)
    else:
        result["bento"] = None
        log.warning("no wheel in %s/dist (uv build --wheel): Bento not built", cfg.root)
    url = url or f"http://{cfg.serving.host}:{cfg.serving.port}"
    if _answers(url):
        wait = timeout_s or max(60.0, 6 * cfg.serving.reload_interval_s)
        result["serving"] = wait_for_version(url, str(version), timeout_s=wait)
        result["url"] = url
    else:
        log.info("no service answers at %s: nothing to roll; the next start serves v%s", url, version)
        result["url"] = None
    return result


def smoke_test(cfg: Config, deployment: dict[str, Any], shot: Path) -> dict[str, Any]:
    """One shot through the deployed endpoint (or, with none running, a temporary service with the deployed
    model): an RGBA PNG of the shot's size from the deployed version, else RuntimeError."""
    import httpx

    data = Path(shot).read_bytes()
    expected = read_header(data)
    token = os.environ.get(cfg.serving.auth_token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def check(url: str) -> dict[str, Any]:
        start = time.perf_counter()
        resp = httpx.post(
            f"{url}/cutout", files={"image": (Path(shot).name, data)}, headers=headers, timeout=60
        )
        latency = 1000 * (time.perf_counter() - start)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}/cutout answered {resp.status_code} for {shot}: {resp.text[:300]}")
        head = read_header(resp.content)
        version = resp.headers.get(HEADER_VERSION)
        if not head.has_alpha or (head.width, head.height) != (expected.width, expected.height):
            raise RuntimeError(f"{shot}: cutout is {head.width}x{head.height} alpha={head.has_alpha}")
        if version != str(deployment.get("model_version")):
            raise RuntimeError(f"{url} answered with v{version}, deployed v{deployment.get('model_version')}")
        return {
            "passed": True,
            "url": url,
            "model_version": version,
            "latency_ms": latency,
            "shot": str(shot),
        }

    if deployment.get("url"):
        return check(deployment["url"])
    with running_service(cfg, deployment["model_uri"]) as url:
        return {**check(url), "url": None, "temporary_service": True}

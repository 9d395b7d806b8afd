"""The ASGI guard in front of the API routes: what can be refused before the body is parsed.

Route and method, bearer token, content type and the size limit (on Content-Length and on the bytes as
they stream in) are checked here; BentoML then parses the body once (`garmentseg.service.uploads`). A
refusal raised below the guard, while BentoML parses, is recorded in the request's scope: the guard
answers it in place of BentoML's 500. Every refusal is a 4xx with a JSON body naming the rule, and every
answer carries the model headers. The guard also serves /version and documents its answers in /docs.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from garmentseg.service import HEADER_NAME, HEADER_VERSION
from garmentseg.service.errors import REFUSAL_KEY, RequestError, refuse
from garmentseg.service.responses import model_headers

if TYPE_CHECKING:
    from garmentseg.service.runtime import ModelRuntime, ServiceMetrics

FORM, JSON = "multipart/form-data", "application/json"


class GuardMiddleware:
    """Checks in front of `routes` (path -> the media type it takes); model headers on every response."""

    def __init__(
        self,
        app: Any,
        *,
        routes: dict[str, str],
        max_request_bytes: int,
        auth_token_env: str,
        runtime: Callable[[], ModelRuntime | None],
        metrics: Callable[[], ServiceMetrics | None],
    ):
        self.app = app
        self.routes = dict(routes)
        self.max_bytes = max_request_bytes
        self.token = os.environ.get(auth_token_env) or None
        self.token_env = auth_token_env
        self.runtime = runtime
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        runtime = self.runtime()
        if path == "/version":
            await _send_json(send, 200, runtime.state() if runtime else {"ready": False})
            return
        send = _with_model_headers(send, runtime)
        if path == "/docs.json":
            await self.app(scope, receive, self._documenting(send))
        elif path in self.routes:
            await self._guard(scope, receive, send, path)
        else:
            await self.app(scope, receive, send)

    async def _guard(self, scope: dict[str, Any], receive: Callable, send: Callable, path: str) -> None:
        try:
            if scope.get("method") != "POST":
                raise RequestError(405, "method_not_allowed", f"{path} takes POST, not {scope.get('method')}")
            self._check_auth(scope)
            self._check_content_type(scope, path)
            self._check_length(scope)
        except RequestError as err:
            await self._refuse(send, path, err)
            return
        refusals: list[RequestError] = []
        scope = {**scope, "headers": _media_type_lower_cased(scope), REFUSAL_KEY: refusals}
        body = _Body(scope, receive, self.max_bytes)

        async def answer(message: dict[str, Any]) -> None:
            if not refusals:
                await send(message)
            elif message["type"] == "http.response.start":  # BentoML's answer to a refused request
                await self._refuse(send, path, await body.drain(refusals[0]))

        await self.app(scope, body.receive, answer)

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

    def _check_content_type(self, scope: dict[str, Any], path: str) -> None:
        media = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        wanted = self.routes[path]
        if media != wanted:
            field = " with the image in the field 'image'" if wanted == FORM else ""
            raise RequestError(
                415,
                "unsupported_media_type",
                f"Content-Type is {media or 'missing'!r}; {path} takes {wanted}{field}",
            )

    def _check_length(self, scope: dict[str, Any]) -> None:
        declared = _header(scope, b"content-length")
        if declared is None:
            return
        if not declared.isdigit():
            raise RequestError(400, "bad_request", f"Content-Length {declared!r} is not a number")
        if int(declared) > self.max_bytes:
            raise RequestError(
                413,
                "too_large",
                f"request body is {declared} bytes; the request limit is {self.max_bytes} bytes",
            )

    async def _refuse(self, send: Callable, path: str, err: RequestError) -> None:
        if (metrics := self.metrics()) is not None:
            metrics.reject(path, err)
        await _send_json(send, err.status, err.body())

    def _documenting(self, send: Callable) -> Callable:
        """Rewrite BentoML's /docs.json answer with document_guard (the body comes whole, then is sent)."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []
        documented = [route for route, media in self.routes.items() if media == FORM]

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


class _Body:
    """The request body as it streams in: refused once more than `limit` bytes have come."""

    def __init__(self, scope: dict[str, Any], receive: Callable, limit: int):
        self.scope, self._receive, self.limit = scope, receive, limit
        self.size, self.complete = 0, False

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        self.size += len(message.get("body", b""))
        self.complete = message["type"] != "http.request" or not message.get("more_body", False)
        if self.size > self.limit:
            err = RequestError(413, "too_large", f"request body exceeds the limit of {self.limit} bytes")
            raise refuse(self.scope, err)
        return message

    async def drain(self, refusal: RequestError) -> RequestError:
        """Read what the parser left unread: a body over the limit is refused as too large, whatever else."""
        try:
            while not self.complete:
                await self.receive()
        except RequestError as err:
            return err
        return refusal


def service_attribute(name: str) -> Callable[[], Any]:
    """A getter for an attribute of the running BentoML service instance (None before it exists)."""

    def get() -> Any:
        import bentoml

        try:
            return getattr(bentoml.get_current_service(), name, None)
        except bentoml.exceptions.BentoMLException:
            return None

    return get


# What the guard answers, by status, for the OpenAPI document (BentoML only lists its own 400/404/500).
GUARD_RESPONSES = {
    "400": "Empty, truncated or corrupt image; malformed multipart form; missing or unexpected field",
    "401": "Missing or wrong bearer token (only when the service's token variable is set)",
    "413": "Body over serving.max_request_bytes, or image over serving.max_pixels (checked in its header)",
    "415": "Not a PNG/JPEG, or not multipart/form-data",
    "429": "More requests in flight than serving.max_concurrency (BentoML's answer): retry shortly",
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
    error = {JSON: {"schema": {"$ref": "#/components/schemas/GarmentsegError"}}}
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


def _with_model_headers(send: Callable, runtime: ModelRuntime | None) -> Callable:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and runtime is not None and runtime.ready:
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            for key, value in model_headers(runtime.current).items():
                if key.lower().encode() not in present:
                    headers.append((key.lower().encode(), value.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _send_json(send: Callable, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _media_type_lower_cased(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request's headers with the Content-Type's media type in lower case (media types are case-
    insensitive; BentoML picks its parser by the exact string), its parameters (the boundary) as sent."""
    headers = []
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-type":
            media, sep, params = value.partition(b";")
            value = media.strip().lower() + sep + params
        headers.append((key, value))
    return headers


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None

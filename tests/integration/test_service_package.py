"""The service package without a server: upload and form checks, the parser's refusals, mask statistics,
hot swap."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from garmentseg.service.errors import REFUSAL_KEY, NotReady, RequestError
from garmentseg.service.responses import mask_stats
from garmentseg.service.runtime import ModelRuntime
from garmentseg.service.uploads import Upload, check_form, parse_forms_once, read_upload


def _png(h: int = 40, w: int = 30) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 90, np.uint8))[1].tobytes()


def _request(body: bytes, content_type: str, refusals: list[RequestError] | None = None) -> Any:
    """A Starlette request over `body`, as BentoML's parser gets it (with the guard's refusal list)."""
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/cutout",
        "headers": [(b"content-type", content_type.encode())],
        "app": object(),
        REFUSAL_KEY: refusals if refusals is not None else [],
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _form(files: dict[str, Any]) -> Any:
    """The form Starlette (BentoML's parser) makes of what httpx sends for `files`."""
    import asyncio

    request = httpx.Request("POST", "http://x/cutout", files=files)

    async def parse() -> Any:
        return await _request(request.read(), request.headers["content-type"]).form()

    return asyncio.run(parse())


def test_read_upload_maps_image_errors_to_statuses() -> None:
    assert read_upload(_png(), max_bytes=10**6, max_pixels=10**6).shape == (40, 30, 3)
    cases = {b"": (400, "empty"), b"GIF89a....": (415, "not_image"), _png()[:-30]: (400, "corrupt")}
    for data, (status, code) in cases.items():
        with pytest.raises(RequestError) as err:
            read_upload(data, max_bytes=10**6, max_pixels=10**6)
        assert (err.value.status, err.value.code) == (status, code)
    with pytest.raises(RequestError) as err:
        read_upload(_png(), max_bytes=10**6, max_pixels=100)
    assert (err.value.status, err.value.code) == (413, "too_large")
    with pytest.raises(RequestError) as err:
        read_upload(_png(), max_bytes=10, max_pixels=10**6)
    assert err.value.status == 413


def test_check_form() -> None:
    form = _form({"image": ("a.png", _png()), "probability": (None, b"true")})
    items = [(name, getattr(value, "filename", value)) for name, value in form.multi_items()]
    assert items == [("image", "a.png"), ("probability", "true")]
    check_form(form, allowed={"image": True, "probability": False}, files=["image"])
    with pytest.raises(RequestError, match="unexpected form field"):
        check_form(form, allowed={"image": True}, files=["image"])
    with pytest.raises(RequestError) as err:
        read_upload(form["image"].file.read(), max_bytes=10**6, max_pixels=100)
    assert err.value.status == 413
    cases = {
        "missing_field": {"probability": (None, b"true")},
        "not_a_file": {"image": (None, b"abc")},
        "duplicate_field": [("image", ("a.png", _png())), ("image", ("b.png", _png()))],
    }
    for code, files in cases.items():
        with pytest.raises(RequestError) as err:
            check_form(_form(files), allowed={"image": True, "probability": False}, files=["image"])
        assert (err.value.status, err.value.code) == (400, code)


def test_bentoml_parser_refuses_bad_forms_for_the_guard() -> None:
    """The patched MultipartSerde: a malformed body or a bad form is a recorded 400 refusal, and a good form
    reaches the handler's type as bytes, parsed once."""
    import asyncio

    from _bentoml_impl.serde import MultipartSerde
    from _bentoml_sdk.io_models import IODescriptor

    def cutout(image: Upload) -> None:
        del image

    spec = IODescriptor.from_input(cutout)
    parse_forms_once(20_000_000)
    parse_forms_once(20_000_000)  # idempotent: wraps BentoML's own parser, not the wrapper
    for body, code in ((b"garbage" * 50, "bad_multipart"), (b"--xx--\r\n", "bad_multipart")):
        refusals: list[RequestError] = []
        request = _request(body, "multipart/form-data; boundary=xx", refusals)
        with pytest.raises(RequestError) as err:
            asyncio.run(MultipartSerde().parse_request(request, spec))
        assert err.value.code == code and refusals == [err.value]
    request = httpx.Request("POST", "http://x/cutout", files={"image": ("a.png", _png())})
    parsed = asyncio.run(
        MultipartSerde().parse_request(_request(request.read(), request.headers["content-type"]), spec)
    )
    assert parsed.image == _png()


def test_mask_stats() -> None:
    mask = np.zeros((100, 50), np.uint8)
    mask[10:30, 5:15] = 255
    mask[60:70, 20:40] = 255
    stats = mask_stats(mask)
    assert stats["garment_fraction"] == pytest.approx(400 / 5000)
    assert stats["bbox"] == {"x": 5, "y": 10, "width": 35, "height": 60}
    assert stats["components"] == 2 and stats["largest_component_fraction"] == pytest.approx(0.5)
    assert mask_stats(np.zeros((4, 4), np.uint8))["bbox"] is None


class _FakeModel(SimpleNamespace):
    def predict_proba(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.full(images[0].shape[:2], 0.7, np.float32)]


def test_runtime_swaps_only_a_warmed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = iter(["1", "2", "3", "3"])
    monkeypatch.setattr(
        "garmentseg.inference.resolve_registered", lambda _uri, _tracking: ("m", next(versions))
    )

    def loader(uri: str, **_: Any) -> _FakeModel:
        if uri.endswith("/2"):
            raise OSError("artifact store down")
        return _FakeModel(
            model_uri=uri,
            model_name="m",
            model_version=uri.rsplit("/", 1)[1],
            input_height=8,
            input_width=4,
            threshold=0.5,
        )

    runtime = ModelRuntime("models:/m@champion", None, reload_interval_s=1, loader=loader)
    with pytest.raises(NotReady):
        _ = runtime.model
    assert runtime.poll_once() and runtime.model.model_version == "1"
    held = runtime.model  # a request in flight keeps its model
    assert not runtime.poll_once()  # v2 fails to load: v1 keeps serving, the error is reported
    assert runtime.model.model_version == "1" and "artifact store down" in runtime.state()["error"]
    assert runtime.poll_once() and runtime.model.model_version == "3" and held.model_version == "1"
    assert runtime.model_for("1") is held and runtime.state()["error"] is None
    assert not runtime.poll_once()


def test_runtime_pinned_uri_loads_once_in_background() -> None:
    calls: list[str] = []
    done = threading.Event()

    def loader(uri: str, **_: Any) -> _FakeModel:
        calls.append(uri)
        done.set()
        return _FakeModel(model_uri=uri, model_name="m", model_version="7", input_height=8, input_width=4)

    runtime = ModelRuntime("models:/m/7", None, reload_interval_s=0.01, loader=loader).start()
    assert done.wait(10)
    runtime._thread.join(5)
    assert calls == ["models:/m/7"] and runtime.ready and not runtime.follows_alias

"""The service's library side without a server: upload checks, form checks, mask statistics, hot swap."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from garmentseg import service_runtime as rt


def _png(h: int = 40, w: int = 30) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 90, np.uint8))[1].tobytes()


def _form(files: dict[str, Any]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/cutout", files=files)
    return request.read(), request.headers["content-type"]


def test_read_upload_maps_image_errors_to_statuses() -> None:
    assert rt.read_upload(_png(), max_bytes=10**6, max_pixels=10**6).shape == (40, 30, 3)
    cases = {b"": (400, "empty"), b"GIF89a....": (415, "not_image"), _png()[:-30]: (400, "corrupt")}
    for data, (status, code) in cases.items():
        with pytest.raises(rt.RequestError) as err:
            rt.read_upload(data, max_bytes=10**6, max_pixels=10**6)
        assert (err.value.status, err.value.code) == (status, code)
    with pytest.raises(rt.RequestError) as err:
        rt.read_upload(_png(), max_bytes=10**6, max_pixels=100)
    assert (err.value.status, err.value.code) == (413, "too_large")
    with pytest.raises(rt.RequestError) as err:
        rt.read_upload(_png(), max_bytes=10, max_pixels=10**6)
    assert err.value.status == 413


def test_parse_and_check_form() -> None:
    body, ctype = _form({"image": ("a.png", _png()), "probability": (None, b"true")})
    parts = rt.parse_form(body, ctype)
    assert [(p.name, p.filename) for p in parts] == [("image", "a.png"), ("probability", None)]
    rt.check_form(parts, file_field="image", allowed=("image", "probability"), max_pixels=10**6)
    with pytest.raises(rt.RequestError, match="unexpected form field"):
        rt.check_form(parts, file_field="image", allowed=("image",), max_pixels=10**6)
    with pytest.raises(rt.RequestError) as err:
        rt.check_form(parts, file_field="image", allowed=("image", "probability"), max_pixels=100)
    assert err.value.status == 413
    with pytest.raises(rt.RequestError) as err:
        rt.parse_form(b"garbage", "multipart/form-data; boundary=zz")
    assert err.value.code == "bad_multipart"


def test_mask_stats() -> None:
    mask = np.zeros((100, 50), np.uint8)
    mask[10:30, 5:15] = 255
    mask[60:70, 20:40] = 255
    stats = rt.mask_stats(mask)
    assert stats["garment_fraction"] == pytest.approx(400 / 5000)
    assert stats["bbox"] == {"x": 5, "y": 10, "width": 35, "height": 60}
    assert stats["components"] == 2 and stats["largest_component_fraction"] == pytest.approx(0.5)
    assert rt.mask_stats(np.zeros((4, 4), np.uint8))["bbox"] is None


class _FakeModel(SimpleNamespace):
    def predict_proba(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.full(images[0].shape[:2], 0.7, np.float32)]


def test_runtime_swaps_only_a_warmed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = iter(["1", "2", "3", "3"])
    monkeypatch.setattr(
        "garmentseg.inference.resolve_registered", lambda uri, tracking: ("m", next(versions))
    )

    def loader(uri: str, tracking_uri: str | None = None) -> _FakeModel:
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

    runtime = rt.ModelRuntime("models:/m@champion", None, reload_interval_s=1, loader=loader)
    with pytest.raises(rt.NotReady):
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

    def loader(uri: str, tracking_uri: str | None = None) -> _FakeModel:
        calls.append(uri)
        done.set()
        return _FakeModel(model_uri=uri, model_name="m", model_version="7", input_height=8, input_width=4)

    runtime = rt.ModelRuntime("models:/m/7", None, reload_interval_s=0.01, loader=loader).start()
    assert done.wait(10)
    runtime._thread.join(5)
    assert calls == ["models:/m/7"] and runtime.ready and not runtime.follows_alias

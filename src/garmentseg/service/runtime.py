"""The model a server answers with: loaded and warmed off the request path, hot-swapped when the registry
alias moves, timed and counted in Prometheus series beside BentoML's own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from garmentseg.service.errors import NotReady, RequestError

if TYPE_CHECKING:
    from garmentseg.inference import CutoutModel, Maps

log = logging.getLogger(__name__)

# A model that failed to load is retried this often (seconds) while /readyz stays 503.
RETRY_LOAD_S = 5.0


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

    def reject(self, endpoint: str, err: RequestError) -> None:
        self.rejected.labels(endpoint, str(err.status), err.code).inc()

    def on_model(self, old: CutoutModel | None, new: CutoutModel) -> None:
        if old is not None:
            self.model_info.labels(*_info_labels(old)).set(0)
        self.model_info.labels(*_info_labels(new)).set(1)
        self.ready.set(1)


def _info_labels(model: CutoutModel) -> tuple[str, str, str]:
    return model.model_name or "unregistered", model.model_version or "unknown", model.model_uri or ""


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
    def current(self) -> CutoutModel | None:
        """The model serving now, or None while none is loaded (for headers; requests use `model`)."""
        return self._current

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

    def predict_maps(self, model: CutoutModel, image: np.ndarray) -> Maps:
        """The library pipeline for one shot (model.predict_maps), timed and counted."""
        start = time.perf_counter()
        maps = model.predict_maps([image])[0]
        self._observe("direct", start, 1)
        return maps

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
        if self.loader is None:
            self._import_model_libraries()
        while not self._stop.is_set():
            self.poll_once()
            if self._current is not None and not watching:
                return
            self._stop.wait(self.reload_interval_s if self._current is not None else RETRY_LOAD_S)

    def _import_model_libraries(self) -> None:
        from garmentseg.inference import import_model_libraries

        try:
            import_model_libraries()
        except ImportError as exc:  # the first load fails on it too, and /readyz says so
            log.error("cannot import the model libraries: %s", exc)

    def start(self) -> ModelRuntime:
        """Load in a background thread (the server answers /livez meanwhile), then keep watching the alias."""
        self._thread = threading.Thread(target=self._run, name="garmentseg-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

"""The Bento service for real: `bentoml serve` on a free loopback port over a SQLite MLflow registry.

Models are tiny U-Nets logged with the platform's own packaging and registered like production models, so
the service loads `models:/<name>@champion` exactly as it does in production. They are untrained: the
tests check plumbing and parity with the library pipeline, not accuracy. The server runs with the bearer
token set, a 1 s alias poll and a slowed warm-up (so /readyz is observed flipping).
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from garmentseg import deploy
from garmentseg.config import Config, load_config
from garmentseg.imageio import decode, read_header
from garmentseg.service import HEADER_NAME, HEADER_VERSION, WARMUP_DELAY_ENV
from garmentseg.service.responses import mask_stats
from tests.review.fixed import fixed_quality

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-3f9a"
MODEL_NAME = "garmentseg-unet-service-test"
pytestmark = pytest.mark.slow(minutes=6)


def _shot(height: int, width: int, seed: int = 0) -> np.ndarray:
    """RGB studio-like shot: light backdrop with noise, a darker garment polygon."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 205, np.float32) + rng.normal(0, 4, (height, width, 3))
    poly = np.array(
        [
            [width * 0.3, height * 0.2],
            [width * 0.7, height * 0.2],
            [width * 0.8, height * 0.85],
            [width * 0.2, height * 0.85],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [poly], (150, 40, 70))
    return np.clip(img, 0, 255).astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[
        1
    ].tobytes()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, and nothing else."""
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _log_version(seed: int, threshold: float, refinement: Any = None) -> str:
    """Log a tiny U-Net with log_cutout_model and a fixed Dice estimate, register it; returns the version."""
    import keras
    import mlflow

    from garmentseg.inference import log_cutout_model
    from garmentseg.model.unet import build_arch

    keras.utils.set_random_seed(seed)
    model = build_arch("basic", base_filters=4, depth=2, input_height=64, input_width=48)
    with mlflow.start_run():
        uri = log_cutout_model(
            model,
            mean=(0.5, 0.45, 0.4),
            std=(0.25, 0.25, 0.25),
            threshold=threshold,
            flag_threshold=25.0,
            input_height=64,
            input_width=48,
            quality=fixed_quality(review_below=0.99),
            refinement=refinement,
        )
    return str(mlflow.register_model(uri, MODEL_NAME).version)


def _set_champion(cfg: Config, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(cfg.tracking_uri, cfg.tracking_uri).set_registered_model_alias(
        MODEL_NAME, "champion", version
    )


@pytest.fixture(scope="module")
def scfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """Demo config over a temporary SQLite registry holding champion v1."""
    import mlflow

    tmp = tmp_path_factory.mktemp("service_mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    cfg = load_config(
        "demo", ROOT / "params.yaml", overrides={"registry": {"tracking_uri": uri, "model_name": MODEL_NAME}}
    )
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("service-test", artifact_location=str(tmp / "artifacts"))
    mlflow.set_experiment(experiment_id=experiment)
    _set_champion(cfg, _log_version(seed=1, threshold=0.5))
    yield cfg
    mlflow.set_tracking_uri(saved)


class Server:
    def __init__(self, url: str, readiness: list[tuple[int, int]]):
        self.url, self.readiness = url, readiness
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def post(
        self, route: str, shot: bytes, *, field: str = "image", auth: bool = True, **kw: Any
    ) -> httpx.Response:
        files = {field: ("shot.png", shot)}
        return httpx.post(
            f"{self.url}{route}", files=files, headers=self.auth if auth else {}, timeout=60, **kw
        )


def _start(
    cfg: Config, tmp: Path, model_uri: str = f"models:/{MODEL_NAME}@champion", **env: str
) -> tuple[Any, str, list[tuple[int, int]]]:
    """Start `bentoml serve`; record (/livez, /readyz) statuses until ready."""
    port = deploy.free_port()
    settings = {
        "GARMENTSEG_API_TOKEN": TOKEN,
        "GARMENTSEG__SERVING__RELOAD_INTERVAL_S": "1",
        "GARMENTSEG__REVIEW__DATABASE": f"sqlite:///{tmp}/review.db",
        "GARMENTSEG__REVIEW__STORAGE_DIR": str(tmp / "review"),
        # the studio's size for the small shots the tests queue: only shots of it can come back as a batch
        "GARMENTSEG__SOURCES__STUDIO__WIDTH": "64",
        "GARMENTSEG__SOURCES__STUDIO__HEIGHT": "96",
        WARMUP_DELAY_ENV: "4",
        **env,
    }
    env = deploy.service_env(cfg, model_uri, **settings)
    log = open(tmp / f"serve-{port}.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = deploy.start_service(cfg, None, "127.0.0.1", port, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            live = httpx.get(f"{url}/livez", timeout=5).status_code
            ready = httpx.get(f"{url}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        seen.append((live, ready))
        if ready == 200:
            return proc, url, seen
        time.sleep(0.3)
    deploy.stop_service(proc)
    raise AssertionError(
        f"service never became ready; log: {(tmp / f'serve-{port}.log').read_text()[-3000:]}"
    )


@pytest.fixture(scope="module")
def server(scfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve")
    proc, url, seen = _start(scfg, tmp)
    try:
        server = Server(url, seen)
        server.review = {"database": f"sqlite:///{tmp}/review.db", "storage_dir": str(tmp / "review")}
        yield server
    finally:
        deploy.stop_service(proc)


_MODELS: dict[str, Any] = {}


def _library_model(cfg: Config, version: str) -> Any:
    from garmentseg.inference import load_cutout_model

    if version not in _MODELS:
        _MODELS[version] = load_cutout_model(f"models:/{MODEL_NAME}/{version}", tracking_uri=cfg.tracking_uri)
    return _MODELS[version]


def _library_cutout(cfg: Config, version: str, rgb: np.ndarray) -> np.ndarray:
    """What `garmentseg predict` does: load the version, predict_proba, to_mask, to_cutout."""
    from garmentseg.inference import to_cutout, to_mask

    model = _library_model(cfg, version)
    return to_cutout(rgb, to_mask(model.predict_proba([rgb])[0], model.threshold))


def test_readyz_flips_only_after_warm_up(server: Server) -> None:
    assert (200, 503) in server.readiness, f"never observed live-but-not-ready: {server.readiness}"
    assert server.readiness[-1] == (200, 200)
    state = httpx.get(f"{server.url}/version").json()
    assert state["ready"] and state["model_version"] == "1" and state["follows_alias"]


@pytest.mark.parametrize(("height", "width"), [(432, 288), (1728, 1152)])
def test_cutout_matches_library_pipeline(server: Server, scfg: Config, height: int, width: int) -> None:
    rgb = _shot(height, width)
    resp = server.post("/cutout", _png(rgb))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    assert resp.headers[HEADER_NAME] == MODEL_NAME
    version = resp.headers[HEADER_VERSION]
    header = read_header(resp.content)
    assert (header.width, header.height, header.channels) == (width, height, 4)
    served = decode(resp.content, max_pixels=10**8, alpha=True)
    expected = _library_cutout(scfg, version, rgb)
    assert np.array_equal(served, expected), f"{np.count_nonzero(served != expected)} values differ"


def test_cutouts_match_garmentseg_predict_for_png_and_jpeg(
    server: Server, scfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served cutout is byte-for-byte what `garmentseg predict` writes for the same file."""
    from click.testing import CliRunner

    from garmentseg.cli import main

    shots = tmp_path / "shots"
    shots.mkdir()
    uploads = {"lossless.png": _png(_shot(432, 288, seed=11)), "camera.jpg": _jpeg(_shot(600, 400, seed=12))}
    for name, data in uploads.items():
        (shots / name).write_bytes(data)
    served = {name: server.post("/cutout", data) for name, data in uploads.items()}
    version = served["lossless.png"].headers[HEADER_VERSION]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", scfg.tracking_uri)
    model_uri = f"models:/{MODEL_NAME}/{version}"
    result = CliRunner().invoke(
        main, ["predict", "--model-uri", model_uri, str(shots), str(tmp_path / "out")]
    )
    # the cutouts are written; the doubtful ones cannot be queued under names outside the contract: exit 1
    assert result.exit_code == 1 and "2 cutouts written" in result.output, result.output
    assert "not queued camera.jpg: camera.jpg: name must be" in result.output
    for name, resp in served.items():
        assert resp.status_code == 200, resp.text
        written_png = (tmp_path / "out" / "cutouts" / f"{Path(name).stem}.png").read_bytes()
        written = decode(written_png, max_pixels=10**8, alpha=True)
        got = decode(resp.content, max_pixels=10**8, alpha=True)
        assert got.shape == written.shape and np.array_equal(got, written), name


def test_cutout_answers_its_review_from_the_same_inference_and_queues_on_request(
    server: Server, scfg: Config
) -> None:
    from garmentseg.review.store import ReviewQueue

    rgb = _shot(96, 64, seed=5)
    plain = server.post("/cutout", _png(rgb))
    assert plain.status_code == 200, plain.text
    model = _library_model(scfg, plain.headers["X-Model-Version"])
    estimate, needs_review = model.review(model.predict_maps([rgb])[0])
    assert plain.headers["X-Needs-Review"] == str(needs_review).lower() == "true"
    assert float(plain.headers["X-Dice-Estimate"]) == pytest.approx(estimate, abs=1e-4)

    unnamed = server.post("/cutout?queue=true", _png(rgb))
    assert unnamed.status_code == 400 and unnamed.json()["error"] == "bad_filename"
    assert "shot.png" in unnamed.json()["message"]
    database = Path(server.review["database"].removeprefix("sqlite:///"))
    assert not database.exists(), "a refused queue request opens no database"

    name = "5d1c7a52-3c59-4d52-9a59-7a1f1f6e2a10_Front"
    url = f"{server.url}/cutout?queue=true"
    queued = httpx.post(url, files={"image": (f"{name}.png", _png(rgb))}, headers=server.auth, timeout=60)
    assert queued.status_code == 200 and queued.content == plain.content
    again = httpx.post(url, files={"image": (f"{name}.png", _png(rgb))}, headers=server.auth, timeout=60)
    assert again.status_code == 200
    queue = ReviewQueue.from_config(
        load_config("demo", ROOT / "params.yaml", overrides={"review": server.review})
    )
    (item,) = queue.items()
    assert (item.file, item.state, item.model_version) == (name, "pending", plain.headers["X-Model-Version"])
    assert item.cutout_path.read_bytes() == plain.content and item.shot_path.read_bytes() == _png(rgb)
    (logged,) = queue.cutout_stats()
    assert (logged["cutouts"], logged["doubtful"]) == (2, 2), "both calls logged, the shot queued once"
    assert logged["mean_estimate"] == pytest.approx(estimate, abs=1e-4)

    import cv2

    jpeg_name = "5d1c7a52-3c59-4d52-9a59-7a1f1f6e2a10_Back.JPG"  # a camera's name: JPEG, upper case
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(_shot(96, 64, seed=6), cv2.COLOR_RGB2BGR))[1].tobytes()
    as_shot = httpx.post(url, files={"image": (jpeg_name, jpeg)}, headers=server.auth, timeout=60)
    assert as_shot.status_code == 200, as_shot.text
    assert {i.file for i in queue.items()} == {name, name.replace("_Front", "_Back")}

    other_size = _png(_shot(90, 64, seed=7))  # another camera: its correction could never be ingested
    refused = httpx.post(
        url, files={"image": (f"{name[:-6]}_FrontRight.png", other_size)}, headers=server.auth, timeout=60
    )
    assert refused.status_code == 422 and refused.json()["error"] == "not_queueable", refused.text
    assert "64x90, expected 64x96 (source studio)" in refused.json()["message"]
    assert len(queue.items()) == 2 and server.post("/cutout", other_size).status_code == 200

    unclear = server.post("/cutout?queue=maybe", _png(rgb))
    assert unclear.status_code == 400 and "queue='maybe'" in unclear.json()["message"]


def test_openapi_documents_the_endpoints_and_their_upload_field(server: Server) -> None:
    spec = httpx.get(f"{server.url}/docs.json").json()
    for route in ("/cutout", "/mask", "/analyze"):
        operation = spec["paths"][route]["post"]
        form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        if "$ref" in form:
            form = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]
        assert "image" in form["properties"], (route, form)
        assert operation.get("description") or operation.get("summary"), route
        for status in ("400", "413", "415"):
            ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/GarmentsegError"), (route, status)
        assert HEADER_VERSION in operation["responses"]["200"]["headers"]
    error = spec["components"]["schemas"]["GarmentsegError"]
    assert set(error["required"]) == {"error", "message", "status"}
    assert "livez" in "".join(spec["paths"]) and "readyz" in "".join(spec["paths"])


def test_pinning_resolves_aliases_and_latest_to_a_numbered_version(scfg: Config) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(scfg.tracking_uri, scfg.tracking_uri)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    newest = max(int(v.version) for v in client.search_model_versions(f"name = '{MODEL_NAME}'"))
    pin = deploy.pin_model_uri
    assert pin(f"models:/{MODEL_NAME}@champion", scfg.tracking_uri) == f"models:/{MODEL_NAME}/{champion}"
    assert pin(f"models:/{MODEL_NAME}/latest", scfg.tracking_uri) == f"models:/{MODEL_NAME}/{newest}"
    assert pin(f"models:/{MODEL_NAME}/1", scfg.tracking_uri) == f"models:/{MODEL_NAME}/1"
    assert pin("runs:/abc/model", scfg.tracking_uri) == "runs:/abc/model"


def test_mask_probability_and_analyze(server: Server, scfg: Config) -> None:
    from garmentseg.inference import to_mask

    rgb = _shot(432, 288, seed=3)
    model = _library_model(scfg, "1")
    prob = model.predict_proba([rgb])[0]

    mask = server.post("/mask", _png(rgb))
    assert mask.status_code == 200 and read_header(mask.content).channels == 1
    assert np.array_equal(decode(mask.content, max_pixels=10**8)[..., 0], to_mask(prob, model.threshold))

    proba = server.post("/mask", _png(rgb), data={"probability": "true"})
    got = decode(proba.content, max_pixels=10**8)[..., 0].astype(int)
    assert np.abs(got - np.rint(prob * 255)).max() == 0

    body = server.post("/analyze", _png(rgb)).json()
    stats = mask_stats(to_mask(prob, model.threshold))
    assert body["garment_fraction"] == pytest.approx(stats["garment_fraction"])
    assert body["bbox"] == stats["bbox"] and body["components"] == stats["components"]
    score, flagged = model.needs_manual_cutout(prob)
    assert body["manual_cutout_score"] == pytest.approx(score) and body["needs_manual_cutout"] == flagged
    assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "1")


MULTIPART_XX = {"Content-Type": "multipart/form-data; boundary=xx"}
BAD_INPUTS = {
    # case: (route, httpx.post keyword arguments, expected status, expected error code)
    "zero-byte file": ("/cutout", {"files": {"image": ("s.png", b"")}}, 400, "empty"),
    "not an image": ("/cutout", {"files": {"image": ("s.png", b"%PDF-1.4 hello")}}, 415, "not_image"),
    "truncated png": (
        "/cutout",
        {"files": {"image": ("s.png", _png(_shot(432, 288))[:3000])}},
        400,
        "corrupt",
    ),
    "truncated jpeg": (
        "/cutout",
        {"files": {"image": ("s.jpg", _jpeg(_shot(432, 288))[:2500])}},
        400,
        "truncated",
    ),
    "truncated header": (
        "/cutout",
        {"files": {"image": ("s.png", _png(_shot(64, 48))[:20])}},
        400,
        "truncated",
    ),
    "decompression bomb": (
        "/cutout",
        {"files": {"image": ("s.png", _bomb_png(100_000, 100_000))}},
        413,
        "too_large",
    ),
    "over the size limit": ("/cutout", {"files": {"image": ("s.png", bytes(20_000_001))}}, 413, "too_large"),
    "missing field": ("/mask", {"files": {"probability": (None, b"true")}}, 400, "missing_field"),
    "unknown field": (
        "/cutout",
        {"files": {"picture": ("s.png", _png(_shot(64, 48)))}},
        400,
        "unexpected_field",
    ),
    "image sent as text": ("/cutout", {"files": {"image": (None, b"abc")}}, 400, "not_a_file"),
    "a 1x1 thumbnail": ("/cutout", {"files": {"image": ("s.png", _png(_shot(1, 1)))}}, 400, "too_small"),
    "image over 1 MB sent as text": (
        "/cutout",
        {"files": {"image": (None, bytes(1_100_000))}},
        400,
        "not_a_file",
    ),
    "probability not a boolean": (
        "/mask",
        {"files": {"image": ("s.png", _png(_shot(64, 48))), "probability": (None, b"banana")}},
        400,
        "invalid_field",
    ),
    "empty form": ("/cutout", {"content": b"--xx--\r\n", "headers": MULTIPART_XX}, 400, "bad_multipart"),
    "garbage form": ("/cutout", {"content": b"garbage" * 50, "headers": MULTIPART_XX}, 400, "bad_multipart"),
    "no boundary": (
        "/cutout",
        {"content": b"abc", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "bad_multipart",
    ),
    "raw png body": (
        "/cutout",
        {"content": b"\x89PNG", "headers": {"Content-Type": "image/png"}},
        415,
        "unsupported_media_type",
    ),
    "json body": ("/analyze", {"json": {"image": "http://169.254.169.254/"}}, 415, "unsupported_media_type"),
    "GET": ("/cutout", {"method": "GET"}, 405, "method_not_allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_4xx_with_a_json_reason(server: Server, case: str) -> None:
    route, kwargs, status, code = BAD_INPUTS[case]
    kwargs = dict(kwargs)
    headers = {**server.auth, **kwargs.pop("headers", {})}
    method = kwargs.pop("method", "POST")
    resp = httpx.request(method, f"{server.url}{route}", headers=headers, timeout=60, **kwargs)
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == code and body["message"], body
    assert resp.headers[HEADER_VERSION]


def test_a_media_type_in_any_case_is_the_same_upload(server: Server) -> None:
    """Media types are case-insensitive (RFC 9110): a client writing Multipart/Form-Data gets its cutout."""
    shot = _png(_shot(96, 64))
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="image"; filename="s.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + shot + b"\r\n--XyZ--\r\n"
    )
    headers = {**server.auth, "Content-Type": "Multipart/Form-Data; boundary=XyZ"}
    resp = httpx.post(f"{server.url}/cutout", content=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png" and resp.headers["x-dice-estimate"]


def test_chunked_upload_over_the_limit_is_refused(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(21):
            yield bytes(1_000_000)

    headers = {**server.auth, "Content-Type": "multipart/form-data; boundary=xx"}
    resp = httpx.post(f"{server.url}/cutout", content=chunks(), headers=headers, timeout=60)
    assert resp.status_code == 413 and resp.json()["error"] == "too_large"


def test_auth_required_on_apis_but_not_on_health(server: Server) -> None:
    png = _png(_shot(64, 48))
    assert server.post("/cutout", png, auth=False).status_code == 401
    wrong = httpx.post(
        f"{server.url}/cutout", files={"image": ("s.png", png)}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    for path in ("/livez", "/readyz", "/metrics", "/version"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path
    assert httpx.get(f"{server.url}/readyz").headers[HEADER_VERSION]


def test_metrics_count_statuses_and_expose_the_model(server: Server) -> None:
    assert server.post("/cutout", b"not an image at all").status_code == 415
    assert server.post("/cutout", _png(_shot(64, 48))).status_code == 200

    def total(lines: list[str], status: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("bentoml_service_request_total")
            and 'endpoint="/cutout"' in line
            and f'http_response_code="{status}"' in line
        )

    # BentoML counts a request once its response is sent: on a busy machine a scrape can come first.
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{server.url}/metrics").text
        lines = [line for line in text.splitlines() if not line.startswith("#")]
        if (total(lines, "200") >= 1 and total(lines, "415") >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert total(lines, "200") >= 1 and total(lines, "415") >= 1
    assert any(
        line.startswith("garmentseg_model_info") and 'model_version="1"' in line and line.endswith(" 1.0")
        for line in lines
    )
    assert any(
        line.startswith("garmentseg_rejected_requests_total") and 'reason="not_image"' in line
        for line in lines
    )
    assert any(line.startswith("bentoml_service_request_duration_seconds_bucket") for line in lines)
    assert any(line.startswith("garmentseg_forward_batch_size_count") for line in lines)


def test_champion_switch_under_load_has_no_failed_request(server: Server, scfg: Config) -> None:
    """Register v2, move the alias while clients loop: every request succeeds, the service ends on v2."""
    png = _png(_shot(432, 288, seed=5))
    results: Counter[tuple[int, str | None]] = Counter()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                resp = server.post("/cutout", png)
                results[(resp.status_code, resp.headers.get(HEADER_VERSION))] += 1
            except httpx.HTTPError as exc:
                results[(0, type(exc).__name__)] += 1

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        version = _log_version(seed=2, threshold=0.45)
        _set_champion(scfg, version)
        state = deploy.wait_for_version(server.url, version, timeout_s=90, interval_s=0.5)
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert state["model_version"] == version
    failed = {key: n for key, n in results.items() if key[0] != 200}
    assert not failed, f"failed requests during the switch: {failed} (all: {dict(results)})"
    assert results[(200, "1")] > 0 and results[(200, version)] > 0, dict(results)
    resp = server.post("/cutout", png)
    assert resp.headers[HEADER_VERSION] == version
    assert np.array_equal(
        decode(resp.content, max_pixels=10**8, alpha=True),
        _library_cutout(scfg, version, _shot(432, 288, seed=5)),
    )


def test_adaptive_batching_path_serves_the_same_cutouts(scfg: Config, tmp_path: Path) -> None:
    """With serving.adaptive_batching on, concurrent /cutout calls share forward passes and agree with the
    library pipeline (batched convolutions may round differently: at most a few boundary pixels flip)."""
    from concurrent.futures import ThreadPoolExecutor

    proc, url, _ = _start(
        scfg, tmp_path, GARMENTSEG__SERVING__ADAPTIVE_BATCHING="true", **{WARMUP_DELAY_ENV: "0"}
    )
    try:
        shots = [_shot(432, 288, seed=s) for s in range(8)]
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def call(rgb: np.ndarray) -> httpx.Response:
            return httpx.post(
                f"{url}/cutout", files={"image": ("s.png", _png(rgb))}, headers=auth, timeout=60
            )

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, shots))
        version = responses[0].headers[HEADER_VERSION]
        for rgb, resp in zip(shots, responses, strict=True):
            assert resp.status_code == 200, resp.text
            served = decode(resp.content, max_pixels=10**8, alpha=True)
            expected = _library_cutout(scfg, version, rgb)
            agree = served[..., 3] == expected[..., 3]  # batching moves a few edge pixels' alpha
            assert np.mean(~agree) < 1e-3
            assert np.array_equal(served[..., :3][agree], expected[..., :3][agree])
        metrics = httpx.get(f"{url}/metrics").text
        sizes = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("bentoml_service_adaptive_batch_size_count")
        ]
        assert sum(sizes) >= 1
    finally:
        deploy.stop_service(proc)


def test_soft_alpha_of_a_guided_model_matches_garmentseg_predict(
    scfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serving.alpha soft and a model that refines its edges (guided filter): the served cutout is still
    exactly what `garmentseg predict` writes with the same setting, and its alpha is anti-aliased."""
    from click.testing import CliRunner

    from garmentseg.cli import main
    from garmentseg.edges import Refinement

    version = _log_version(seed=3, threshold=0.5, refinement=Refinement("guided", "colour", 8, 1e-3, 4))
    model_uri = f"models:/{MODEL_NAME}/{version}"
    proc, url, _ = _start(
        scfg, tmp_path, model_uri, GARMENTSEG__SERVING__ALPHA="soft", **{WARMUP_DELAY_ENV: "0"}
    )
    try:
        shots = tmp_path / "shots"
        shots.mkdir()
        uploads = {
            "studio.png": _png(_shot(1728, 1152, seed=21)),
            "camera.jpg": _jpeg(_shot(600, 400, seed=22)),
        }
        for name, data in uploads.items():
            (shots / name).write_bytes(data)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        served = {
            name: httpx.post(f"{url}/cutout", files={"image": (name, data)}, headers=auth, timeout=60)
            for name, data in uploads.items()
        }
    finally:
        deploy.stop_service(proc)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", scfg.tracking_uri)
    monkeypatch.setenv("GARMENTSEG__SERVING__ALPHA", "soft")
    result = CliRunner().invoke(
        main, ["predict", "--model-uri", model_uri, "--no-queue", str(shots), str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    for name, resp in served.items():
        assert resp.status_code == 200 and resp.headers[HEADER_VERSION] == version, resp.text
        got = decode(resp.content, max_pixels=10**8, alpha=True)
        out = tmp_path / "out"
        written = decode(
            (out / "cutouts" / f"{Path(name).stem}.png").read_bytes(), max_pixels=10**8, alpha=True
        )
        assert np.array_equal(got, written), name
        mask = decode((out / "masks" / f"{Path(name).stem}.png").read_bytes(), max_pixels=10**8)[..., 0]
        assert np.array_equal(got[..., 3] >= 128, mask > 0) and ((got[..., 3] % 255) > 0).any(), name


def test_serving_check_reports_sizes_versions_and_budget(
    scfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Airflow serving-check step: a real server for one pinned version, RGBA outputs, latency budget."""
    monkeypatch.setenv("GARMENTSEG_API_TOKEN", TOKEN)
    shots = [_png(_shot(432, 288, seed=7)), _png(_shot(96, 64, seed=8))]
    report = deploy.serving_check(scfg, f"models:/{MODEL_NAME}/1", shots, latency_budget_ms=30_000)
    assert report["passed"], report["problems"]
    assert report["model_version"] == "1" and report["n_images"] == 2
    assert report["latency_ms"]["p95"] < 30_000


def test_garmentseg_serve_serves_the_given_version_and_stops_cleanly_on_sigterm(
    scfg: Config, tmp_path: Path
) -> None:
    """The README's `garmentseg serve --port N --model-uri URI`: ready, answers with that version, and a
    SIGTERM ends it (and the bentoml server it started) with exit code 0."""
    import os
    import signal
    import subprocess
    import sys

    port = deploy.free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": scfg.tracking_uri, "GARMENTSEG_PROFILE": "demo"}
    env.pop(scfg.serving.auth_token_env, None)
    command = [sys.executable, "-m", "garmentseg.cli", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*command, "--model-uri", f"models:/{MODEL_NAME}/1"], env=env, stdout=sink, stderr=sink
        )
        try:
            state = deploy.wait_ready(f"http://127.0.0.1:{port}", timeout_s=180, proc=proc)
            assert state["model_version"] == "1" and not state["follows_alias"]
            resp = httpx.post(
                f"http://127.0.0.1:{port}/cutout", files={"image": ("s.png", _png(_shot(96, 64)))}
            )
            assert resp.status_code == 200 and resp.headers[HEADER_VERSION] == "1"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)

"""Out of the server: start, stop and wait for the Bento service, build it pinned to a model, roll a new
champion out and check it answers; and the `garmentseg serve` command at the bottom.

`service_env` / `serve_command` say how `garmentseg serve` and tests start `bentoml serve`;
`running_service` yields the URL of a temporary one; `wait_for_version` is how a deploy step knows the
version answers (on the canary before the champion moves, on production after); `serving_check` (the
canary's check) and `smoke_test` (production's, after the promotion) send shots through `garmentseg.client`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from garmentseg.cliopts import config_options
from garmentseg.service import HEADER_VERSION, MODEL_URI_ENV

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

SERVICE_DIR = Path(__file__).resolve().parents[2] / "bentos"
SERVICE_TARGET = "service:GarmentCutout"


# ----------------------------------------------------------------------------------- the service process
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


# ------------------------------------------------------------------------------------ checking it answers
def service_url(cfg: Config, *, canary: bool = False) -> str:
    """Where the production service (following `champion`) or the canary (following `challenger`) answers."""
    return f"http://{cfg.serving.host}:{cfg.serving.canary_port if canary else cfg.serving.port}"


def serving_check(
    cfg: Config,
    model_uri: str,
    images: Sequence[Path | bytes],
    latency_budget_ms: float | None = None,
    *,
    url: str | None = None,
) -> dict[str, Any]:
    """Smoke-test `model_uri` behind the real service: every shot gets an RGBA cutout of its own size from
    that model's version, within the latency budget (p95, default cfg.serving.latency_budget_ms). `url` is a
    running service (the canary) to check; without it a temporary one serves `model_uri`. Returns a
    JSON-ready report whose `passed` says whether the rollout may go on."""
    import numpy as np

    from garmentseg.inference import resolve_registered

    budget = float(latency_budget_ms or cfg.serving.latency_budget_ms)
    _, version = resolve_registered(model_uri, cfg.tracking_uri)
    if url is None:
        with running_service(cfg, model_uri) as temporary:
            info, latencies, problems = _send_shots(cfg, temporary, images, version)
    else:
        info, latencies, problems = _send_shots(cfg, url, images, version)
    p95 = float(np.percentile(latencies, 95)) if latencies else float("nan")
    if not images:
        problems.append("no images to check")
    elif p95 > budget:
        problems.append(f"p95 latency {p95:.0f} ms exceeds the budget of {budget:.0f} ms")
    return {
        "passed": not problems,
        "reason": "; ".join(problems) or "all shots cut out within the budget",
        "model_uri": model_uri,
        "url": url,
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


def _send_shots(
    cfg: Config, url: str, images: Sequence[Path | bytes], version: str | None
) -> tuple[dict[str, Any], list[float], list[str]]:
    """Each shot through `client.cut_out`: the service's /version, the latencies, and what was wrong."""
    import httpx

    from garmentseg.client import cut_out, cutout_problems

    info = httpx.get(f"{url}/version", timeout=10).json()
    expected = version or info.get("model_version")
    problems: list[str] = []
    latencies: list[float] = []
    for i, item in enumerate(images):
        data = item if isinstance(item, bytes) else Path(item).read_bytes()
        label = f"image {i}" if isinstance(item, bytes) else str(item)
        reply = cut_out(cfg, url, data, filename="shot")
        latencies.append(reply.latency_ms)
        problems += [f"{label}: {p}" for p in cutout_problems(reply, data, expected)]
    return info, latencies, problems


def smoke_test(cfg: Config, deployment: dict[str, Any], shot: Path) -> dict[str, Any]:
    """One shot through the deployed endpoint (or, with none running, a temporary service with the deployed
    model): an RGBA PNG of the shot's size from the deployed version, else RuntimeError."""
    from garmentseg.client import cut_out, cutout_problems

    data = Path(shot).read_bytes()

    def check(url: str) -> dict[str, Any]:
        reply = cut_out(cfg, url, data, filename=Path(shot).name)
        problems = cutout_problems(reply, data, deployment.get("model_version"))
        if problems:
            raise RuntimeError(f"{url}/cutout, {shot}: {'; '.join(problems)}")
        return {
            "passed": True,
            "url": url,
            "model_version": reply.model_version,
            "latency_ms": reply.latency_ms,
            "shot": str(shot),
        }

    if deployment.get("url"):
        return check(deployment["url"])
    with running_service(cfg, deployment["model_uri"]) as url:
        return {**check(url), "url": None, "temporary_service": True}


# ------------------------------------------------------------------------------------------- deploying
class BuildError(RuntimeError):
    """A Bento that cannot be built: the project's wheel or the model is missing (named)."""


def build_bento(cfg: Config, model_uri: str | None = None) -> tuple[str, str]:
    """Build the Bento from bentos/bentofile.yaml with the model pinned: models:/name@champion is resolved to
    models:/name/<version> and baked into the Bento's environment, so the image never changes model by
    itself. Returns (bento tag, pinned model URI). Needs the garmentseg wheel in dist/ (`uv build --wheel`)."""
    import tempfile

    import bentoml
    import yaml
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from garmentseg.inference import resolve_registered

    spec = yaml.safe_load((SERVICE_DIR / "bentofile.yaml").read_text())
    if missing := [w for w in spec["python"]["wheels"] if not (cfg.root / w).is_file()]:
        raise BuildError(f"{', '.join(missing)} missing: build it first with `uv build --wheel`")
    wanted = model_uri or cfg.serving.model_uri
    try:
        pinned = pin_model_uri(wanted, cfg.tracking_uri)
        name, version = resolve_registered(pinned, cfg.tracking_uri)
        if name is not None:  # a numbered version is pinned as given: it must exist
            MlflowClient(tracking_uri=cfg.tracking_uri).get_model_version(name, str(version))
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise BuildError(
            f"{wanted}: no model to build with in registry {cfg.tracking_uri}: {first}"
        ) from None
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
    """Roll out `model_uri` (models:/name/<version>): build the Bento pinned to it when the wheel is in dist/,
    and wait until the running service at `url` answers with that version. The default `url` is production,
    which follows `champion`; the canary (`service_url(cfg, canary=True)`) follows `challenger`, so the
    candidate is deployed there before the champion moves. Returns what happened, for the next task."""
    from garmentseg.inference import resolve_registered

    name, version = resolve_registered(model_uri, cfg.tracking_uri)
    result: dict[str, Any] = {"model_uri": model_uri, "model_name": name, "model_version": version}
    wheels = sorted((cfg.root / "dist").glob("garmentseg-*.whl"))
    if wheels:
        result["bento"], _ = build_bento(cfg, model_uri)
    else:
        result["bento"] = None
        log.warning("no wheel in %s/dist (uv build --wheel): Bento not built", cfg.root)
    url = url or service_url(cfg)
    if _answers(url):
        wait = timeout_s or max(60.0, 6 * cfg.serving.reload_interval_s)
        result["serving"] = wait_for_version(url, str(version), timeout_s=wait)
        result["url"] = url
    else:
        log.info("no service answers at %s: nothing to roll; the next start serves v%s", url, version)
        result["url"] = None
    return result


# ------------------------------------------------------------------------------------ `garmentseg serve`
@click.command("serve")
@click.option("--host", default=None, help="Interface to bind (default: serving.host).")
@click.option("--port", type=int, default=None, help="Port (default: serving.port).")
@click.option(
    "--model-uri",
    default=None,
    help="Model to serve (default: $GARMENTSEG_MODEL_URI, then serving.model_uri, the champion alias).",
)
@click.option("--build", is_flag=True, help="Build a Bento pinned to the model's current version instead.")
@config_options
def serve(
    host: str | None,
    port: int | None,
    model_uri: str | None,
    build: bool,
    profile: str | None,
    params: str | None,
) -> None:
    """Serve the cutout API (`bentoml serve bentos/service.py`) until Ctrl-C, or build a pinned Bento."""
    from garmentseg.config import load_config

    cfg = load_config(profile, params)
    if build:
        try:
            tag, pinned = build_bento(cfg, model_uri)
        except BuildError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"built {tag} serving {pinned}; containerize with: bentoml containerize {tag}")
        return
    host, port = host or cfg.serving.host, port or cfg.serving.port
    proc = start_service(cfg, model_uri, host, port)
    click.echo(f"serving on http://{host}:{port} (pid {proc.pid}); Ctrl-C stops it", err=True)

    signals_seen: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        """Pass the signal on to the server's process group; a second one kills it."""
        signals_seen.append(signum)
        log.info("signal %d: stopping the service", signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if len(signals_seen) > 1 else signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    code = proc.wait()
    sys.exit(0 if code in (0, -signal.SIGTERM) else code)

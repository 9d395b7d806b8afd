"""Benchmark the Bento service against the bare library pipeline, with the U-Net a profile serves.

One command, several figures (JSON on stdout and in --out):
  1. latency of POST /cutout for a 1152x1728 shot vs the bare pipeline (the same library function,
     decode -> model -> estimate -> encode, called in this process) in the same run: p50/p95 and their ratio (target: endpoint p50 <= 1.10x bare);
  2. throughput and latency with 1, 4 and 16 concurrent clients, adaptive batching off and on
     (on only where it gives >= 1.2x throughput with p95 <= 2x);
  3. a load test of --seconds with concurrent clients and one champion switch in the middle: zero errors.

    uv run python benchmarks/bench_service.py --seconds 120 --out var/bench/service.json
    uv run python benchmarks/bench_service.py --profile real --skip throughput loadtest

By default the model is untrained: build_unet of the profile's `model` section (demo: carvana, 8 filters,
depth 4, 192x128; cpu and real: EfficientNet-Lite0 at 288x192, its ImageNet weights), with the profile's edge
refinement and a quality estimate, so each request runs what a served champion of that profile runs. The
forward pass does not depend on the weights, but the transfers and the PNG encoding depend on the shot and
the mask: at 1152x1728 a plain garment's clean cutout encodes to ~0.4 MB in ~30 ms, an untrained model's
speckled mask to ~2.3 MB in ~80 ms, and the drawn shot is a 3.2 MB upload where a studio shot is ~1.9 MB.
`--model-uri` (with `--tracking-uri`) serves a trained model instead, and `--shot` sends a real shot (a
studio raw/ PNG) instead of the drawn one:

    uv run python benchmarks/bench_service.py --profile cpu --model-uri models:/m-... \
        --tracking-uri sqlite:///var/mlflow/mlflow.db --shot data/synth/demo/raw/<garment>_Front.png \
        --skip throughput loadtest

Everything runs on loopback in a temporary SQLite registry. bf16 inference is measured on a trained model,
where Dice can move: benchmarks/bench_bf16.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from garmentseg import deploy
from garmentseg.client import cut_out
from garmentseg.config import Config, load_config
from garmentseg.review.estimate import FEATURES, QualityEstimate

ROOT = Path(__file__).resolve().parents[1]


def studio_shot(height: int = 1728, width: int = 1152, seed: int = 0) -> np.ndarray:
    """A studio-like RGB shot: graded backdrop with sensor noise, a mannequin, a patterned garment."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 214, np.float32)
    img += np.linspace(-10, 10, height, dtype=np.float32)[:, None, None]
    cv2.ellipse(img, (width // 2, height // 8), (width // 10, height // 14), 0, 0, 360, (205, 170, 140), -1)
    cv2.rectangle(img, (width // 3, height // 5), (2 * width // 3, int(height * 0.95)), (205, 170, 140), -1)
    poly = np.array(
        [
            [0.3 * width, 0.25 * height],
            [0.7 * width, 0.25 * height],
            [0.8 * width, 0.8 * height],
            [0.2 * width, 0.8 * height],
        ],
        np.int32,
    )
    cv2.fillPoly(img, [poly], (60, 90, 150))
    for y in range(int(0.25 * height), int(0.8 * height), 24):
        cv2.line(img, (0, y), (width, y), (200, 200, 60), 3)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def timing_quality_estimate(cfg: Config) -> QualityEstimate:
    """A quality estimate with neutral coefficients: each request computes its features like a calibrated
    one (the cost measured here); the estimate's value itself is not looked at."""
    zeros = tuple(0.0 for _ in FEATURES)
    return QualityEstimate(
        mean=zeros,
        scale=tuple(1.0 for _ in FEATURES),
        coef=zeros,
        intercept=-4.0,
        review_below=cfg.review.target_dice,
        target_dice=cfg.review.target_dice,
        policy="timing only",
        fitted_on=0,
        below_target=0,
        map_size=(cfg.model.input_height, cfg.model.input_width),
    )


def untrained_model(cfg: Config, seed: int) -> dict[str, Any]:
    """log_cutout_model's arguments for the profile's untrained U-Net, refinement and a timing estimate."""
    import keras

    from garmentseg.edges import Refinement
    from garmentseg.model.unet import build_unet

    keras.utils.set_random_seed(seed)
    return {
        "keras_model": build_unet(cfg.model),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "threshold": 0.5,
        "flag_threshold": 30.0,
        "input_height": cfg.model.input_height,
        "input_width": cfg.model.input_width,
        "quality": timing_quality_estimate(cfg),
        "refinement": Refinement.from_config(cfg.inference),
    }


def trained_model(model_uri: str, tracking_uri: str | None) -> dict[str, Any]:
    """log_cutout_model's arguments that log a copy of a trained model: weights, preprocessing, refinement
    and its calibrated estimate."""
    from garmentseg.inference import load_cutout_model

    model = load_cutout_model(model_uri, tracking_uri)
    return {
        "keras_model": model.keras_model,
        "mean": model.mean,
        "std": model.std,
        "threshold": model.threshold,
        "flag_threshold": model.flag_threshold,
        "input_height": model.input_height,
        "input_width": model.input_width,
        "quality": model.quality,
        "refinement": model.refinement,
    }


def setup_registry(
    tmp: Path, profile: str, model_uri: str | None = None, tracking_uri: str | None = None
) -> Config:
    """Two versions of the profile's U-Net (or two copies of the trained `model_uri`) in a temporary SQLite
    registry; champion -> v1."""
    import mlflow

    from garmentseg.inference import log_cutout_model

    trained = trained_model(model_uri, tracking_uri) if model_uri else None
    uri = f"sqlite:///{tmp}/mlflow.db"
    cfg = load_config(profile, ROOT / "params.yaml", overrides={"registry": {"tracking_uri": uri}})
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("bench", artifact_location=str(tmp / "art")))
    client = mlflow.MlflowClient(uri, uri)
    for seed in (1, 2):
        with mlflow.start_run():
            logged = log_cutout_model(**(trained or untrained_model(cfg, seed)))
        mlflow.register_model(logged, cfg.registry.model_name)
    client.set_registered_model_alias(cfg.registry.model_name, "champion", "1")
    return cfg


def percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "n": len(ms)}


def latency(cfg: Config, url: str, png: bytes, n: int) -> dict[str, Any]:
    """The bare pipeline (`garmentseg.service.responses.respond` rendering `review.cutout_answer`: what /cutout
    runs, its review estimate included, called in this process) and POST /cutout, alternated request by
    request so both see the same background load."""
    import functools

    import httpx

    from garmentseg.service.responses import respond
    from garmentseg.service.review import cutout_answer
    from garmentseg.service.runtime import ModelRuntime

    runtime = ModelRuntime(f"models:/{cfg.registry.model_name}/1", cfg.tracking_uri, reload_interval_s=0)
    assert runtime.poll_once(), runtime.state()["error"]
    bare: list[float] = []
    endpoint: list[float] = []
    render = functools.partial(cutout_answer, shot=png, alpha=cfg.serving.alpha)
    with httpx.Client(timeout=120) as client:
        for i in range(n + 3):
            start = time.perf_counter()
            out = respond(runtime, runtime.model, png, render, cfg.serving).body
            mid = time.perf_counter()
            reply = cut_out(cfg, url, png, timeout_s=120, client=client)
            end = time.perf_counter()
            if reply.status != 200 or reply.content != out:
                raise RuntimeError(f"/cutout differs from the bare pipeline: {reply.describe()}")
            if i >= 3:  # warm-up rounds
                bare.append(1000 * (mid - start))
                endpoint.append(1000 * (end - mid))
    b, e = percentiles(bare), percentiles(endpoint)
    return {
        "bare_pipeline": {**b, "output_bytes": len(out)},
        "endpoint_cutout": e,
        "p50_ratio": e["p50"] / b["p50"],
        "p95_ratio": e["p95"] / b["p95"],
    }


def load(
    cfg: Config, url: str, png: bytes, clients: int, seconds: float, during: Any = None
) -> dict[str, Any]:
    """`clients` threads posting /cutout back to back for `seconds`; `during(stop_event)` runs beside them."""
    import httpx

    stop = threading.Event()
    times: list[float] = []
    statuses: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    reply = cut_out(cfg, url, png, timeout_s=120, client=client)
                    key, version = str(reply.status), reply.model_version or "?"
                except httpx.HTTPError as exc:
                    key, version = type(exc).__name__, "-"
                with lock:
                    statuses[key] += 1
                    versions[version] += 1
                    if key == "200":
                        times.append(1000 * (time.perf_counter() - start))

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    extra = None
    if during is not None:
        extra = during(seconds)
    else:
        time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - begin
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "throughput_rps": round(statuses["200"] / elapsed, 3),
        **(percentiles(times) if times else {}),
        "statuses": dict(statuses),
        "versions": dict(versions),
        "errors": sum(n for k, n in statuses.items() if k != "200"),
        **({"switch": extra} if extra else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="demo", help="whose model, refinement and estimate to serve")
    parser.add_argument(
        "--seconds", type=float, default=120, help="load test duration (champion switch midway)"
    )
    parser.add_argument("--window", type=float, default=20, help="seconds per throughput measurement")
    parser.add_argument("--n", type=int, default=30, help="sequential requests for the latency comparison")
    parser.add_argument("--load-clients", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["latency", "throughput", "loadtest"])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "service.json")
    parser.add_argument(
        "--model-uri", default=None, help="serve this trained model instead of an untrained one"
    )
    parser.add_argument("--tracking-uri", default=None, help="the registry --model-uri is in")
    parser.add_argument("--shot", type=Path, default=None, help="send this PNG instead of the drawn shot")
    args = parser.parse_args()

    from garmentseg.imageio import encode_png, read_header

    png = args.shot.read_bytes() if args.shot else encode_png(studio_shot())
    header = read_header(png)
    report: dict[str, Any] = {
        "shot": {
            "file": str(args.shot or "drawn"),
            "width": header.width,
            "height": header.height,
            "png_bytes": len(png),
        },
        "served_model": args.model_uri or "untrained",
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # Keras progress bars while models are logged
            cfg = setup_registry(Path(tmp), args.profile, args.model_uri, args.tracking_uri)
        report["profile"] = args.profile
        report["model"] = cfg.model.model_dump()
        report["refine"] = cfg.inference.refine
        uri = f"models:/{cfg.registry.model_name}@champion"
        env = {"GARMENTSEG__SERVING__RELOAD_INTERVAL_S": "2"}
        with deploy.running_service(
            cfg, uri, env={**env, "GARMENTSEG__SERVING__ADAPTIVE_BATCHING": "false"}
        ) as url:
            if "latency" not in args.skip:
                report["latency_ms"] = latency(cfg, url, png, args.n)
                log_step("latency", report["latency_ms"])
            if "throughput" not in args.skip:
                report["throughput_batching_off"] = [load(cfg, url, png, c, args.window) for c in (1, 4, 16)]
                log_step("throughput off", report["throughput_batching_off"])
            if "loadtest" not in args.skip:
                report["load_test"] = load(
                    cfg, url, png, args.load_clients, args.seconds, during=switcher(cfg, url)
                )
                log_step("load test", report["load_test"])
        if "throughput" not in args.skip:
            with deploy.running_service(
                cfg, uri, env={**env, "GARMENTSEG__SERVING__ADAPTIVE_BATCHING": "true"}
            ) as url:
                report["throughput_batching_on"] = [load(cfg, url, png, c, args.window) for c in (1, 4, 16)]
            log_step("throughput on", report["throughput_batching_on"])
            report["batching_verdict"] = verdict(
                report["throughput_batching_off"], report["throughput_batching_on"]
            )
    report["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def switcher(cfg: Config, url: str) -> Any:
    """Move champion v1 -> v2 halfway through the load test; report when the service answered with v2."""

    def during(seconds: float) -> dict[str, Any]:
        from mlflow import MlflowClient

        time.sleep(seconds / 2)
        moved = time.perf_counter()
        MlflowClient(cfg.tracking_uri, cfg.tracking_uri).set_registered_model_alias(
            cfg.registry.model_name, "champion", "2"
        )
        deploy.wait_for_version(url, "2", timeout_s=seconds, interval_s=0.25)
        took = time.perf_counter() - moved
        time.sleep(max(0.0, seconds / 2 - took))
        return {"to_version": "2", "serving_after_s": round(took, 1)}

    return during


def verdict(off: list[dict[str, Any]], on: list[dict[str, Any]]) -> dict[str, Any]:
    """Batching wins at a concurrency if it gives >= 1.2x throughput with p95 <= 2x."""
    rows = {}
    for a, b in zip(off, on, strict=True):
        gain = b["throughput_rps"] / a["throughput_rps"] if a["throughput_rps"] else float("nan")
        p95 = b.get("p95", float("inf")) / a.get("p95", float("inf"))
        rows[str(a["clients"])] = {
            "throughput_gain": round(gain, 3),
            "p95_ratio": round(p95, 3),
            "wins": bool(gain >= 1.2 and p95 <= 2.0),
        }
    return rows


def log_step(name: str, value: Any) -> None:
    print(f"--- {name}: {json.dumps(value)}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

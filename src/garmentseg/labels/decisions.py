"""What the audit's suspects become: the stewards' decisions, and the pairs a retrain leaves out.

A steward confirms a suspect (the label is wrong: it goes to retouch and stays out of training) or releases
it (the label is right: it is never flagged again). Decisions are keyed by the pair and its label's sha256,
so a retouched label (new bytes) is judged afresh, and a released one stays released only while unchanged.
The record is one JSON file, `<reports_dir>/labels/decisions.json`, written atomically.

Which pairs the scoring model learnt from: a model's training run may carry its index as the artifact
`TRAINING_INDEX_ARTIFACT`; without it, every train and valid pair is taken as seen (`in_sample`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garmentseg.labels.audit import LABELS_DIR, Suspect

if TYPE_CHECKING:
    import pandas as pd

    from garmentseg.config import Config

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.json"
CONFIRMED, RELEASED = "confirmed", "released"
# The index a training run learnt from, logged beside its model (see the module docstring).
TRAINING_INDEX_ARTIFACT = "data/index.parquet"
SEEN_SPLITS = ("train", "valid")
LABEL_AUDIT = "label-audit"  # the review queue's source for a label a steward confirmed wrong


class DecisionError(ValueError):
    """A decision that cannot be recorded; the message names the file and the rule."""


def decisions_path(cfg: Config) -> Path:
    return cfg.path(cfg.paths.reports_dir) / LABELS_DIR / DECISIONS_FILE


def _key(file: str, sha256: str) -> str:
    return f"{file}@{sha256}"


def read_decisions(path: Path) -> dict[str, dict[str, Any]]:
    """key (file@sha256) -> decision; an absent file is no decisions yet."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DecisionError(f"{path}: not valid JSON ({exc}); fix or remove it") from None
    return record.get("decisions", {})


def recorded_decision(path: Path, file: str, sha256: str) -> str | None:
    """The decision on record for this exact label (file + sha256), if any."""
    return read_decisions(path).get(_key(file, sha256), {}).get("decision")


def record_decision(path: Path, file: str, sha256: str, decision: str, note: str = "") -> dict[str, Any]:
    """Record confirmed/released for one label (file + its sha256); the last word wins."""
    if decision not in (CONFIRMED, RELEASED):
        raise DecisionError(f"decision {decision!r} is not one of {CONFIRMED}, {RELEASED}")
    if not sha256:
        raise DecisionError(f"{file}: no label sha256; a decision must name the exact label it judges")
    path = Path(path)
    decisions = read_decisions(path)
    entry = {
        "file": file,
        "cutout_sha256": sha256,
        "decision": decision,
        "by": os.environ.get("GARMENTSEG_ACTOR") or getpass.getuser(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "note": note,
    }
    decisions[_key(file, sha256)] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"decisions": decisions}, indent=2, sort_keys=True))
    tmp.replace(path)
    return entry


def send_to_retouch(cfg: Config, file: str, shot: Path, label: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """A label confirmed wrong goes to the retouchers' queue as `retouch`, the label itself as the cutout
    to fix: `garmentseg review export` hands it out and `review import` brings the correction back, which
    supersedes this label (new bytes, so the confirmation no longer applies). Its estimate is 0: the label
    is known to be wrong, so it sorts first."""
    from garmentseg.review.store import ReviewQueue

    queue = ReviewQueue.from_config(cfg)
    item = queue.record(
        file=file,
        shot=shot,
        cutout=label,
        estimate=0.0,
        model_version="",
        source=LABEL_AUDIT,
    )
    # the shot may have been queued, even closed, before: back to retouch with this label to fix
    item = queue.send_back(item.id, label, by=entry["by"], source=LABEL_AUDIT, estimate=0.0)
    return {"review_item": item.id, "state": item.state, "queue": queue.location}


def withdraw_retouch(cfg: Config, file: str, by: str) -> list[int]:
    """A label released as right after it was confirmed wrong: its open retouch item (source label-audit)
    is accepted as it stands, so the retouchers no longer get it. The ids of the items withdrawn."""
    from garmentseg.review.store import OPEN_STATES, ReviewQueue

    queue = ReviewQueue.from_config(cfg)
    waiting = [i for i in queue.items(OPEN_STATES) if i.file == file and i.source == LABEL_AUDIT]
    return [queue.decide(item.id, "accept", by=by).id for item in waiting]


def decision_of(decisions: dict[str, dict[str, Any]], suspect: Suspect) -> str | None:
    entry = decisions.get(_key(suspect.file, suspect.cutout_sha256))
    return entry["decision"] if entry else None


def apply_decisions(suspects: list[Suspect], decisions: dict[str, dict[str, Any]]) -> list[Suspect]:
    """The ranking with the stewards' word on it: confirmed labels first, released ones last, each saying so."""
    word = {CONFIRMED: "confirmed wrong by a steward", RELEASED: "released as right by a steward"}
    order = {CONFIRMED: 0, None: 1, RELEASED: 2}
    judged = []
    for suspect in suspects:
        decision = decision_of(decisions, suspect)
        if decision:
            suspect = replace(suspect, reason=f"{word[decision]}; model: {suspect.reason}", decision=decision)
        judged.append((order[decision], suspect))
    return [s for _, s in sorted(judged, key=lambda pair: (pair[0], -pair[1].score, pair[1].file))]


def exclusion_reason(suspect: Suspect, decision: str | None, threshold: float) -> str | None:
    """Why a retrain leaves this label out (a steward confirmed it wrong, or it scores at or above
    `threshold` and nobody released it); None when it is kept."""
    if decision == CONFIRMED:
        return "confirmed wrong by a steward"
    if decision != RELEASED and suspect.score >= threshold:
        sample = "in-sample" if suspect.in_sample else "out-of-sample"
        return f"score {suspect.score:.3f} >= {threshold} ({sample})"
    return None


def exclude_suspects(
    frame: pd.DataFrame,
    suspects: list[Suspect],
    threshold: float,
    decisions: dict[str, dict[str, Any]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, excluded) rows of an index: a pair is excluded when a steward confirmed its label wrong, or
    when it scores at or above `threshold` and no steward released that exact label.

    In-sample pairs are judged by the same rule: training on a wrong label only lowers its score, so one
    that still scores above the threshold is disputed all the more. `excluded` carries score, reason and
    why, for the run's record.
    """
    decisions = decisions or {}
    by_pair = {(s.garment_id, s.view, s.cutout_sha256): s for s in suspects}
    why: dict[int, tuple[float, str, str]] = {}
    for idx, row in frame.iterrows():
        suspect = by_pair.get((str(row["garment_id"]), str(row["view"]), str(row.get("cutout_sha256", ""))))
        if suspect is None:
            continue
        reason = exclusion_reason(suspect, decision_of(decisions, suspect), threshold)
        if reason:
            why[idx] = (suspect.score, suspect.reason, reason)
    excluded = frame.loc[list(why)].copy()
    excluded["score"] = [why[i][0] for i in why]
    excluded["reason"] = [why[i][1] for i in why]
    excluded["why"] = [why[i][2] for i in why]
    return frame.drop(index=list(why)), excluded


def trained_pairs(cfg: Config, model_uri: str, frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(garment_id, view, cutout_sha256) the model at `model_uri` learnt from: its run's logged index when
    there is one, else every train and valid pair of `frame` (the split rule never moves a garment)."""
    import pandas as pd

    from garmentseg.registry import mlflow_client

    client = mlflow_client(cfg)
    seen = frame
    try:
        from garmentseg.inference import source_run

        run_id = source_run(model_uri, cfg.tracking_uri)
        local = client.download_artifacts(run_id, TRAINING_INDEX_ARTIFACT) if run_id else None
        if local:
            seen = pd.read_parquet(local)
    except Exception as exc:  # any failure to read the lineage falls back to the split rule
        log.info("%s: no training index (%s); train and valid pairs count as in-sample", model_uri, exc)
    seen = seen[seen["split"].isin(SEEN_SPLITS)]
    return set(zip(seen["garment_id"], seen["view"], seen["cutout_sha256"], strict=True))

"""The training set screened before a retrain: audit it with the champion, leave out the suspects.

`screen_training_set` is what the retrain's audit task calls: the champion scores every pair; pairs it was
trained on are marked in-sample (`decisions.trained_pairs`); pairs over `labels.exclude_score` that no
steward released, and every pair a steward confirmed wrong, are left out (`decisions.exclude_suspects`). The
stewards' page and `excluded.json` are written under `<reports_dir>/labels/<name>`, and `Screening.summary()`
is the small JSON-able answer a task returns. The train task reads the list back with `read_exclusions` and
drops it with `drop_excluded`; the training run records it with `log_screening`.
Without a champion (the first run) nothing is left out, and the summary says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from garmentseg.config import Config
    from garmentseg.labels.audit import Suspect

log = logging.getLogger(__name__)

EXCLUDED_JSON = "excluded.json"
MLFLOW_ARTIFACT = "labels/excluded.json"


@dataclass
class Screening:
    kept: pd.DataFrame
    excluded: pd.DataFrame
    model_uri: str | None
    report: Path | None
    note: str
    suspects: list[Suspect] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "model_uri": self.model_uri,
            "kept": len(self.kept),
            "excluded": [f"{r.garment_id}_{r.view}" for r in self.excluded.itertuples()],
            "exclusions": _records(self.excluded),  # travels with the task result: no shared disk needed
            "in_sample": sum(s.in_sample for s in self.suspects),
            "report": str(self.report) if self.report else None,
            "note": self.note,
        }


def screen_training_set(
    cfg: Config, frame: pd.DataFrame, root: Path, *, name: str, model_uri: str | None = None
) -> Screening:
    """Audit `frame` with the champion (or model_uri) and split it into kept and excluded pairs."""
    from mlflow.exceptions import MlflowException

    from garmentseg.inference import load_cutout_model
    from garmentseg.labels.audit import audit_labels, default_out_dir
    from garmentseg.labels.decisions import (
        apply_decisions,
        decisions_path,
        exclude_suspects,
        read_decisions,
        trained_pairs,
    )
    from garmentseg.labels.report import write_report

    uri = model_uri or f"models:/{cfg.registry.model_name}@champion"
    try:
        model = load_cutout_model(uri, cfg.tracking_uri)
    except (MlflowException, OSError, ValueError) as exc:
        note = f"no label audit: {uri} cannot be loaded from {cfg.tracking_uri} ({str(exc).splitlines()[0]})"
        log.warning(note)
        return Screening(frame, frame.iloc[0:0], None, None, note)
    out_dir = default_out_dir(cfg, name)
    decisions = read_decisions(decisions_path(cfg))
    suspects = audit_labels(
        frame, root, model, cfg, out_dir=out_dir, trained_on=trained_pairs(cfg, uri, frame)
    )
    kept, excluded = exclude_suspects(frame, suspects, cfg.labels.exclude_score, decisions)
    ranked = apply_decisions(suspects, decisions)
    page = write_report(out_dir, ranked, model_uri=uri, excluded=excluded)
    (out_dir / EXCLUDED_JSON).write_text(json.dumps(_records(excluded), indent=2))
    note = (
        f"{len(excluded)} of {len(frame)} pairs left out (score >= {cfg.labels.exclude_score} or confirmed)"
    )
    log.info("label audit with %s: %s; report %s", uri, note, page)
    return Screening(kept, excluded, uri, page, note, ranked)


def _records(excluded: pd.DataFrame) -> list[dict[str, Any]]:
    if excluded.empty:  # nothing left out (also: no champion, so no audit columns)
        return []
    cols = ["garment_id", "view", "cutout_sha256", "score", "reason", "why"]
    return [
        {c: (float(v) if c == "score" else str(v)) for c, v in zip(cols, row, strict=True)}
        for row in excluded[cols].itertuples(index=False)
    ]


def read_exclusions(path: Path) -> list[dict[str, Any]]:
    """The excluded.json a screening wrote (an absent file: nothing excluded)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else []


def drop_excluded(frame: pd.DataFrame, exclusions: list[dict[str, Any]]) -> pd.DataFrame:
    """The index without the excluded pairs (matched on garment, view and the label's sha256)."""
    gone = {(e["garment_id"], e["view"], e["cutout_sha256"]) for e in exclusions}
    keys = zip(frame["garment_id"], frame["view"], frame["cutout_sha256"], strict=True)
    return frame[[key not in gone for key in keys]].reset_index(drop=True)


def log_screening(exclusions: list[dict[str, Any]], report: str | None = None) -> None:
    """Into the active MLflow run: the excluded list as an artifact, its count, and where the report is."""
    import mlflow

    mlflow.log_dict(exclusions, MLFLOW_ARTIFACT)
    mlflow.log_metric("labels_excluded", len(exclusions))
    if report:
        mlflow.set_tag("labels_audit_report", report)

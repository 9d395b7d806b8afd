"""The retrain's drift check: its training set's statistics against the champion's training set's.

A training run learns from the pairs it logged (`data/index.parquet`, labels.decisions). Their statistics
(`drift.batch_statistics`: per view, median and spread of garment fraction, brightness, contrast, partial
alpha) are measured from the validation metadata the retrain just wrote for every dataset folder, matched on
batch, garment, view and the shot's sha256, and logged on the run (`TRAINING_STATS_ARTIFACT`), so the run is a
reference for the next retrain. The champion's come from that artifact on its run; a champion trained before
the artifact existed is measured from its logged index over today's metadata (the pairs still in the dataset,
counted in the result). The verdict never fails a run: the drift is data to look at, not a defect.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from garmentseg.labels.decisions import TRAINING_INDEX_ARTIFACT
from garmentseg.validation.drift import batch_statistics, compare_statistics

if TYPE_CHECKING:
    import pandas as pd

    from garmentseg.config import Config

log = logging.getLogger(__name__)

TRAINING_STATS_ARTIFACT = "drift/training_set_stats.json"
DRIFT_ARTIFACT = "drift/vs_champion.json"
DRIFTED, WITHIN, NO_REFERENCE = "drifted", "within threshold", "no reference"
_PAIR_KEY = ["batch_id", "garment_id", "view"]


def training_set_metadata(folders: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every validated folder's metadata.parquet (validate_training_set's result), tagged with its batch."""
    import pandas as pd

    from garmentseg.validation.validate import METADATA_PARQUET

    frames = []
    for batch_id, result in folders.items():
        path = Path(result["report_dir"]) / METADATA_PARQUET
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no validation metadata for {batch_id}; validate the set first")
        frames.append(pd.read_parquet(path).assign(batch_id=batch_id))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def pair_statistics(metadata: pd.DataFrame, index: pd.DataFrame) -> tuple[dict[str, Any], int]:
    """(statistics, pairs measured) of the pairs `index` names whose shot is, byte for byte, in `metadata`."""
    shots = metadata.loc[metadata["side"] == "raw", [*_PAIR_KEY, "raw_sha256"]].astype(str)
    wanted = index[[*_PAIR_KEY, "raw_sha256"]].astype(str)
    matched = wanted.merge(shots, on=[*_PAIR_KEY, "raw_sha256"])[_PAIR_KEY].drop_duplicates()
    rows = metadata.astype({k: str for k in _PAIR_KEY}).merge(matched, on=_PAIR_KEY)
    return batch_statistics(rows), len(matched)


def run_statistics(client: Any, run_id: str, metadata: pd.DataFrame) -> tuple[dict[str, Any], str]:
    """A run's training-set statistics: its logged artifact, else measured from its logged index."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        try:
            stats = client.download_artifacts(run_id, TRAINING_STATS_ARTIFACT, tmp)
            return json.loads(Path(stats).read_text())["stats"], f"run {run_id}'s logged statistics"
        except Exception:  # MLflow raises OSError or MlflowException for an artifact the run lacks
            index = pd.read_parquet(client.download_artifacts(run_id, TRAINING_INDEX_ARTIFACT, tmp))
    stats, measured = pair_statistics(metadata, index)
    return stats, f"run {run_id}'s index, {measured} of {len(index)} pairs still in the dataset"


def _champion_run(cfg: Config, client: Any) -> tuple[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(cfg.registry.model_name, "champion")
    except MlflowException:
        return None
    return version.run_id, f"{cfg.registry.model_name} v{version.version}"


def check_training_drift(cfg: Config, metadata: pd.DataFrame, run_id: str) -> dict[str, Any]:
    """Compare run `run_id`'s training set with the champion's and record both on the run (never raises for
    drift). The result is small and JSON-able: verdict, the drifted statistics, every comparison, a note."""
    import pandas as pd

    from garmentseg.registry import mlflow_client

    client = mlflow_client(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        index = client.download_artifacts(run_id, TRAINING_INDEX_ARTIFACT, tmp)
        current, measured = pair_statistics(metadata, pd.read_parquet(index))
    champion = _champion_run(cfg, client)
    z_warn = cfg.validation.drift_z_warn
    if champion is None:
        drift, source, verdict = {}, "no champion yet", NO_REFERENCE
    else:
        reference, source = run_statistics(client, champion[0], metadata)
        drift = compare_statistics(current, reference, z_warn)
        verdict = DRIFTED if any(d["drifted"] for d in drift.values()) else WITHIN if drift else NO_REFERENCE
    moved = {k: d for k, d in drift.items() if d["drifted"]}
    note = _note(verdict, moved, champion[1] if champion else None, z_warn)
    result = {
        "verdict": verdict,
        "drifted": sorted(moved),
        "drift": drift,
        "threshold_sd": z_warn,
        "pairs": measured,
        "reference": f"{champion[1]} ({source})" if champion else source,
        "note": note,
    }
    client.log_dict(run_id, {"pairs": measured, "stats": current}, TRAINING_STATS_ARTIFACT)
    client.log_dict(run_id, result, DRIFT_ARTIFACT)
    client.log_metric(run_id, "training_drift_stats_drifted", len(moved))
    client.set_tag(run_id, "training_drift", verdict)
    (log.warning if verdict == DRIFTED else log.info)("training set drift: %s", note)
    return result


def _note(verdict: str, moved: dict[str, Any], champion: str | None, z_warn: float) -> str:
    if verdict == NO_REFERENCE:
        why = f"no statistic in common with {champion}" if champion else "no champion yet"
        return f"Training-set drift not checked: {why}."
    if verdict == WITHIN:
        return f"Training set within {z_warn:g} sd of {champion}'s on every statistic."
    shifts = ", ".join(
        f"{k} {d['reference']:g} -> {d['current']:g} ({d['shift_sd']:+g} sd)"
        for k, d in sorted(moved.items())
    )
    return f"Training set drifted from {champion}'s (threshold {z_warn:g} sd): {shifts}."

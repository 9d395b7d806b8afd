"""The retrain's drift check: a training set against the champion's, on a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from garmentseg.config import Config, load_config
from garmentseg.orchestration.run_notes import note_dag_run
from garmentseg.validation.training_drift import (
    DRIFT_ARTIFACT,
    DRIFTED,
    NO_REFERENCE,
    TRAINING_STATS_ARTIFACT,
    WITHIN,
    check_training_drift,
)
from tests.conftest import ROOT

VIEWS = ("Front", "Back")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return load_config(
        "demo",
        ROOT / "params.yaml",
        overrides={
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "artifact_root": str(tmp_path / "artifacts"),
                "model_name": f"drift-{uuid.uuid4().hex[:8]}",
            }
        },
    )


def _batch(batch_id: str, garments: int, brightness: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validation metadata, index rows) of a batch: a raw and a cutout row per garment view."""
    rng = np.random.default_rng(seed)
    meta, index = [], []
    for g in range(garments):
        for view in VIEWS:
            gid, sha = f"{batch_id}-g{g:02d}", uuid.uuid4().hex
            common = {"batch_id": batch_id, "garment_id": gid, "view": view}
            meta.append({**common, "side": "raw", "raw_sha256": sha, "brightness": rng.normal(brightness, 4)})
            meta.append(
                {**common, "side": "cutouts", "raw_sha256": None, "garment_fraction": rng.normal(0.3, 0.02)}
            )
            index.append({**common, "raw_sha256": sha, "cutout_sha256": uuid.uuid4().hex, "split": "train"})
    meta = pd.DataFrame(meta).assign(contrast=np.nan, alpha_partial_share=0.0)
    return meta, pd.DataFrame(index)


def _training_run(cfg: Config, index: pd.DataFrame, folder: Path) -> str:
    """A run that logged the pairs it trained on as data/index.parquet, as train_on_frame does."""
    import mlflow

    from garmentseg.training import ensure_experiment

    folder.mkdir(parents=True)
    index.to_parquet(folder / "index.parquet", index=False)
    with mlflow.start_run(experiment_id=ensure_experiment(cfg)) as run:
        mlflow.log_artifact(str(folder / "index.parquet"), "data")
    return run.info.run_id


def _make_champion(cfg: Config, run_id: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    name = cfg.registry.model_name
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)


def _artifact(cfg: Config, run_id: str, path: str, tmp_path: Path) -> dict:
    from mlflow import MlflowClient

    return json.loads(
        Path(MlflowClient(cfg.tracking_uri).download_artifacts(run_id, path, str(tmp_path))).read_text()
    )


def test_no_champion_means_no_reference_and_the_run_keeps_its_statistics(cfg, tmp_path):
    meta, index = _batch("synth/base", 12, 150, seed=0)
    run_id = _training_run(cfg, index, tmp_path / "run")
    result = check_training_drift(cfg, meta, run_id)
    assert result["verdict"] == NO_REFERENCE and result["drifted"] == []
    assert "no champion yet" in result["note"]
    stats = _artifact(cfg, run_id, TRAINING_STATS_ARTIFACT, tmp_path)
    assert stats["pairs"] == 24 and stats["stats"]["brightness/Front"]["n"] == 12


@pytest.mark.parametrize(("new_brightness", "verdict"), [(150, WITHIN), (215, DRIFTED)])
def test_a_training_set_is_judged_against_the_champions(cfg, tmp_path, new_brightness, verdict):
    base_meta, base_index = _batch("synth/base", 12, 150, seed=1)
    champion_run = _training_run(cfg, base_index, tmp_path / "champion")
    _make_champion(cfg, champion_run)
    new_meta, new_index = _batch("b2", 30, new_brightness, seed=2)  # a larger new batch joins the set
    meta = pd.concat([base_meta, new_meta], ignore_index=True)
    candidate_run = _training_run(cfg, pd.concat([base_index, new_index]), tmp_path / "candidate")

    result = check_training_drift(cfg, meta, candidate_run)

    assert result["verdict"] == verdict
    # the champion predates the statistics artifact: measured from its index over today's metadata
    assert "24 of 24 pairs still in the dataset" in result["reference"]
    assert result["pairs"] == 84
    if verdict == DRIFTED:
        assert set(result["drifted"]) == {"brightness/Front", "brightness/Back"}
        assert result["drift"]["brightness/Front"]["shift_sd"] > cfg.validation.drift_z_warn
        assert "brightness/Front 1" in result["note"] and "sd)" in result["note"]
    else:
        assert result["drifted"] == [] and "within" in result["note"]
    assert "garment_fraction/Front" in result["drift"]  # every shared statistic is compared
    from mlflow import MlflowClient

    run = MlflowClient(cfg.tracking_uri).get_run(candidate_run)
    assert run.data.tags["training_drift"] == verdict
    assert run.data.metrics["training_drift_stats_drifted"] == len(result["drifted"])
    assert _artifact(cfg, candidate_run, DRIFT_ARTIFACT, tmp_path)["verdict"] == verdict


def test_the_champions_logged_statistics_are_the_reference_once_it_has_them(cfg, tmp_path):
    base_meta, base_index = _batch("synth/base", 12, 150, seed=3)
    champion_run = _training_run(cfg, base_index, tmp_path / "champion")
    check_training_drift(cfg, base_meta, champion_run)  # its own retrain recorded its statistics
    _make_champion(cfg, champion_run)
    # the champion's shots are gone from today's dataset: only its logged statistics can judge
    new_meta, new_index = _batch("b3", 12, 215, seed=4)
    result = check_training_drift(cfg, new_meta, _training_run(cfg, new_index, tmp_path / "candidate"))
    assert result["verdict"] == DRIFTED and "logged statistics" in result["reference"]


def test_a_note_without_an_airflow_api_says_why(cfg):
    assert (
        note_dag_run(cfg, "garment_retrain", "manual__1", "drifted")
        == "not noted: airflow.api_url is not set"
    )

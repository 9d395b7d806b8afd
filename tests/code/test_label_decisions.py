"""The stewards' record and the retrain's exclusion rule, on hand-made suspects (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from garmentseg.labels.audit import Suspect, rank
from garmentseg.labels.decisions import (
    CONFIRMED,
    RELEASED,
    DecisionError,
    apply_decisions,
    exclude_suspects,
    read_decisions,
    record_decision,
)


def _suspect(file: str, score: float, sha: str = "aa", *, in_sample: bool = False) -> Suspect:
    garment, view = file.split("_")
    return Suspect(file, score, "missing", "missing region: ...", "", garment, view, sha, "train", in_sample)


def _frame(suspects: list[Suspect]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"garment_id": s.garment_id, "view": s.view, "cutout_sha256": s.cutout_sha256} for s in suspects]
    )


SUSPECTS = [
    _suspect("g1_Front", 0.95),
    _suspect("g2_Front", 0.70, in_sample=True),
    _suspect("g3_Back", 0.40),
    _suspect("g4_Back", 0.10),
]


def test_exclusion_follows_the_threshold_and_the_stewards(tmp_path: Path) -> None:
    kept, excluded = exclude_suspects(_frame(SUSPECTS), SUSPECTS, threshold=0.5)
    assert list(excluded["garment_id"]) == ["g1", "g2"]
    assert "in-sample" in excluded.iloc[1]["why"] and "0.950 >= 0.5" in excluded.iloc[0]["why"]
    assert list(kept["garment_id"]) == ["g3", "g4"]

    path = tmp_path / "decisions.json"
    record_decision(path, "g1_Front", "aa", RELEASED, "lace: the holes are real")
    record_decision(path, "g4_Back", "aa", CONFIRMED)
    decisions = read_decisions(path)
    kept, excluded = exclude_suspects(_frame(SUSPECTS), SUSPECTS, threshold=0.5, decisions=decisions)
    assert list(excluded["garment_id"]) == ["g2", "g4"]
    assert excluded.iloc[1]["why"] == "confirmed wrong by a steward"
    assert len(kept) + len(excluded) == len(SUSPECTS)


def test_a_released_label_is_not_reflagged_until_its_bytes_change(tmp_path: Path) -> None:
    path = tmp_path / "labels" / "decisions.json"
    record_decision(path, "g1_Front", "aa", RELEASED)
    ranked = apply_decisions(rank(SUSPECTS), read_decisions(path))
    assert ranked[-1].file == "g1_Front" and ranked[-1].reason.startswith("released as right")
    assert [s.file for s in ranked[:3]] == ["g2_Front", "g3_Back", "g4_Back"]

    retouched = [_suspect("g1_Front", 0.95, sha="bb"), *SUSPECTS[1:]]
    _, excluded = exclude_suspects(_frame(retouched), retouched, 0.5, read_decisions(path))
    assert "g1" in set(excluded["garment_id"])  # a new label is judged afresh
    assert apply_decisions(rank(retouched), read_decisions(path))[0].file == "g1_Front"


def test_the_record_is_json_and_refuses_what_it_cannot_key(tmp_path: Path) -> None:
    path = tmp_path / "decisions.json"
    entry = record_decision(path, "g1_Front", "aa", CONFIRMED, "back layer missing")
    assert json.loads(path.read_text())["decisions"]["g1_Front@aa"] == entry
    with pytest.raises(DecisionError, match="not one of"):
        record_decision(path, "g1_Front", "aa", "maybe")
    with pytest.raises(DecisionError, match="g1_Front: no label sha256"):
        record_decision(path, "g1_Front", "", RELEASED)
    path.write_text("{broken")
    with pytest.raises(DecisionError, match=r"decisions.json: not valid JSON"):
        read_decisions(path)


def test_the_model_s_own_training_index_says_what_it_saw_whatever_its_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A models:/m-<id> or runs:/ URI finds its run's training index, so a batch the model never saw is not
    taken as in-sample by the split rule's guess."""
    from mlflow import MlflowClient

    from garmentseg.config import load_config
    from garmentseg.labels.decisions import TRAINING_INDEX_ARTIFACT, trained_pairs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("GARMENTSEG__REGISTRY__ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    cfg = load_config("demo")
    client = MlflowClient(tracking_uri=cfg.tracking_uri)
    experiment = client.create_experiment("lineage", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    trained = pd.DataFrame(
        {
            "garment_id": ["g1", "g2"],
            "view": ["Front"] * 2,
            "cutout_sha256": ["a1", "a2"],
            "split": ["train", "test"],
        }
    )
    index = tmp_path / "data" / "index.parquet"
    index.parent.mkdir()
    trained.to_parquet(index)
    client.log_artifact(run.info.run_id, str(index), Path(TRAINING_INDEX_ARTIFACT).parent.as_posix())
    logged = client.create_logged_model(experiment, source_run_id=run.info.run_id)
    never_seen = pd.DataFrame(
        {"garment_id": ["g9"], "view": ["Front"], "cutout_sha256": ["a9"], "split": ["train"]}
    )
    for uri in (f"models:/{logged.model_id}", f"runs:/{run.info.run_id}/model"):
        assert trained_pairs(cfg, uri, never_seen) == {("g1", "Front", "a1")}, uri

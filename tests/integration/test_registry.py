"""The registry gate on a real MLflow registry: SQLite in a tmp dir, and the machine's PostgreSQL when it runs.

The candidates are real Keras models logged with the platform's own packaging. Their quality is set by
construction instead of by training, so "better", "worse", "tie" and "below the floor" are certain:
the synthetic garments' red channel rises from top to bottom, the backdrop's red is low, and each model is a
1x1 convolution whose bias decides how much of the garment it keeps.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from garmentseg import evaluation, gate, registry
from garmentseg.config import Config, load_config
from garmentseg.imageio import write_png
from garmentseg.inference import load_cutout_model
from tests.integration.pg import postgres_database

pytestmark = pytest.mark.slow(minutes=6)  # every gate path, on SQLite and on PostgreSQL
ROOT = Path(__file__).resolve().parents[2]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
H, W = 48, 32


def _shot(rng: np.random.Generator, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 40
    img[..., 1:] = 150 + rng.integers(-5, 5, (H, W, 2))
    mask = np.zeros((H, W), np.uint8)
    top, bottom, left, right = 6, H - 6, 8 + rng.integers(0, 3), W - 8
    mask[top:bottom, left:right] = 255
    ramp = np.linspace(100, 230, bottom - top).astype(np.uint8)[:, None]
    img[top:bottom, left:right, 0] = ramp
    if flip:
        img, mask = img[:, ::-1].copy(), mask[:, ::-1].copy()
    return img, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """Eight garments x three views in the data contract, all in the test split."""
    root = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(3)
    rows = []
    for g in range(8):
        gid = str(uuid.UUID(int=g + 1, version=4))
        for i, view in enumerate(("Front", "FrontRight", "Back")):
            img, mask = _shot(rng, flip=i == 2)
            name = f"{gid}_{view}.png"
            write_png(root / "raw" / name, img)
            write_png(root / "cutouts" / name, np.dstack([img * (mask[..., None] > 0), mask]))
            rows.append(
                {
                    "garment_id": gid,
                    "view": view,
                    "raw_path": f"raw/{name}",
                    "cutout_path": f"cutouts/{name}",
                    "width": W,
                    "height": H,
                    "split": "test",
                    "garment_type": "dress",
                    "difficulty": "normal",
                    "batch_id": "blobs",
                }
            )
    return pd.DataFrame(rows), root


def _cutoff_model(red_cutoff: float):
    """Garment where the red channel (0..255) exceeds `red_cutoff`: lower cutoff keeps more of the ramp."""
    import keras

    inputs = keras.Input((H, W, 3))
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid")
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs)
    normalised_cutoff = (red_cutoff / 255 - MEAN[0]) / STD[0]
    layer.set_weights(
        [np.array([20.0, 0, 0], np.float32).reshape(1, 1, 3, 1), np.array([-20.0 * normalised_cutoff])]
    )
    return model


def _train_run(cfg: Config, red_cutoff: float, *, corrupt: bool = False) -> str:
    """A finished MLflow run holding a logged cutout model, as training leaves it."""
    import mlflow

    from garmentseg.inference import log_cutout_model

    mlflow.set_tracking_uri(cfg.tracking_uri)
    experiment = mlflow.get_experiment_by_name(cfg.registry.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(cfg.registry.experiment, artifact_location=cfg.registry.artifact_root)
    )
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"data_version": "blobs-v1", "git_commit": "abc123", "profile": cfg.profile})
        mlflow.log_metric("test_dice_median", 1.0 - red_cutoff / 1000)
        uri = log_cutout_model(
            _cutoff_model(red_cutoff),
            mean=MEAN,
            std=STD,
            threshold=0.5,
            flag_threshold=50.0,
            input_height=H,
            input_width=W,
        )
        if corrupt:  # the weights on disk are garbage: loading must fail, and the gate must fail closed
            model_id = uri.rsplit("/", 1)[-1]
            broken = [
                path
                for path in Path(cfg.registry.artifact_root).rglob("*")
                if path.is_file() and model_id in str(path) and "data" in path.parts
            ]
            assert broken, f"no weights found for {uri}"
            for path in broken:
                path.write_bytes(b"not a keras archive")
    return run.info.run_id


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def cfg(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/mlflow.db"
    else:
        uri = request.getfixturevalue("postgres_mlflow_uri")
    return load_config(
        "demo",
        ROOT / "params.yaml",
        overrides={
            "registry": {
                "tracking_uri": uri,
                "artifact_root": str(tmp_path / "artifacts"),
                "model_name": f"garmentseg-test-{uuid.uuid4().hex[:8]}",
                "dice_floor": 0.8,
                "slice_tolerance": 0.01,
            }
        },
    )


@pytest.fixture
def postgres_mlflow_uri() -> str:
    with postgres_database("mlflow_registry") as uri:
        yield uri


GOOD, BETTER, WORSE, AWFUL = 110.0, 70.0, 125.0, 200.0  # garment red ramps 100..230, backdrop 40


def _register_and_gate(cfg: Config, dataset, red_cutoff: float, **kw) -> tuple[str, gate.GateDecision]:
    frame, root = dataset
    version = str(registry.register(_train_run(cfg, red_cutoff, **kw), cfg).version)
    return version, gate.gate(version, cfg, frame, root, data_version="blobs-v1")


def test_bootstrap_then_better_then_worse_then_tie_then_rollback(cfg: Config, dataset) -> None:
    v1, first = _register_and_gate(cfg, dataset, GOOD)
    assert first.passed and first.mode == "bootstrap" and first.champion_version is None
    assert "bootstrap" in first.reason
    registry.promote(v1, cfg)

    v2, better = _register_and_gate(cfg, dataset, BETTER)
    assert better.passed and better.mode == "compare" and better.champion_version == v1
    assert better.candidate_score > better.champion_score
    registry.promote(v2, cfg)
    state = registry.show(cfg)
    assert state["champion"]["version"] == v2 and state["previous"]["version"] == v1

    v3, worse = _register_and_gate(cfg, dataset, WORSE)
    assert not worse.passed and worse.verdict == "reject" and "below champion" in worse.reason
    with pytest.raises(registry.RegistryError, match="reject"):
        registry.promote(v3, cfg)
    assert registry.show(cfg)["champion"]["version"] == v2

    v4, tie = _register_and_gate(cfg, dataset, BETTER)
    assert tie.passed and tie.candidate_score == pytest.approx(tie.champion_score)

    move = registry.rollback(cfg)
    assert move["from_version"] == v2 and move["to_version"] == v1
    assert registry.show(cfg)["champion"]["version"] == v1

    log = registry.promotion_log(cfg)
    assert [(m["action"], m["from_version"], m["to_version"]) for m in log] == [
        ("promote", None, v1),
        ("promote", v1, v2),
        ("rollback", v2, v1),
    ]
    assert all(m["who"] and m["when"] and m["why"] for m in log)
    shown = registry.show(cfg)
    assert shown["champion"]["tags"]["git_commit"] == "abc123"
    assert shown["champion"]["metrics"]["test_dice_median"] > 0
    assert {d["candidate_version"] for d in shown["decisions"]} == {v1, v2, v3, v4}


def test_a_decision_that_no_longer_holds_moves_nothing(cfg: Config, dataset) -> None:
    """A passing decision is for the champion and the floor it was taken under: once either changed, promote
    refuses and the gate scores again. A rollback uses `previous` up, restores only a version that was
    champion or passed, and the gate fails closed when the champion alias vanished from under the log."""
    frame, root = dataset
    v1, first = _register_and_gate(cfg, dataset, GOOD)
    v2, second = _register_and_gate(cfg, dataset, GOOD)
    assert first.mode == second.mode == "bootstrap" and first.passed and second.passed
    registry.promote("01", cfg)  # the version as anyone types it
    with pytest.raises(
        registry.RegistryError, match=f"decided against no champion, the champion is now v{v1}"
    ):
        registry.promote(v2, cfg)
    regated = gate.gate(v2, cfg, frame, root, data_version="blobs-v1")
    assert regated.mode == "compare" and regated.champion_version == v1 and regated.passed
    stricter = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"dice_floor": 0.999})})
    with pytest.raises(registry.RegistryError, match=r"decided under floor 0\.8, the floor is now 0\.999"):
        registry.promote(v2, stricter)
    registry.promote(v2, cfg)

    v3, _ = _register_and_gate(cfg, dataset, AWFUL)
    with pytest.raises(registry.RegistryError, match=f"v{v3} was never champion and has no passing gate"):
        registry.rollback(cfg, v3)
    assert registry.rollback(cfg)["to_version"] == v1
    with pytest.raises(registry.RegistryError, match="no `previous` version"):
        registry.rollback(cfg)  # it would put back the version just rolled back from
    assert registry.rollback(cfg, v2)["to_version"] == v2  # named: it was champion

    registry.mlflow_client(cfg).delete_registered_model_alias(cfg.registry.model_name, registry.CHAMPION)
    blind = gate.gate(v3, cfg, frame, root, data_version="blobs-v2")
    assert blind.verdict == "error" and f"names v{v2} as champion" in blind.reason
    assert gate.gate(v3, cfg, frame, root, data_version="blobs-v2").decided_at > blind.decided_at  # retried


def test_below_floor_is_rejected_even_without_champion(cfg: Config, dataset) -> None:
    version, decision = _register_and_gate(cfg, dataset, AWFUL)
    assert decision.verdict == "reject" and "below the floor" in decision.reason
    with pytest.raises(registry.RegistryError):
        registry.promote(version, cfg)
    assert registry.show(cfg)["champion"] is None


def test_unloadable_candidate_fails_closed(cfg: Config, dataset) -> None:
    frame, root = dataset
    good = str(registry.register(_train_run(cfg, GOOD), cfg).version)
    gate.gate(good, cfg, frame, root, "blobs-v1")
    registry.promote(good, cfg)
    version, decision = _register_and_gate(cfg, dataset, BETTER, corrupt=True)
    assert decision.verdict == "error" and decision.reason.startswith("failed closed")
    with pytest.raises(registry.RegistryError, match="error"):
        registry.promote(version, cfg)
    assert registry.show(cfg)["champion"]["version"] == good


def test_register_and_gate_are_idempotent(cfg: Config, dataset) -> None:
    frame, root = dataset
    run_id = _train_run(cfg, GOOD)
    first = registry.register(run_id, cfg)
    again = registry.register(run_id, cfg)
    assert first.version == again.version
    decision = gate.gate(first.version, cfg, frame, root, "blobs-v1")
    repeat = gate.gate(first.version, cfg, frame, root, "blobs-v1")
    assert repeat.to_json() == decision.to_json()
    # the gate's view slices are evaluation's, not a computation of its own
    model = load_cutout_model(f"models:/{cfg.registry.model_name}/{first.version}", cfg.tracking_uri)
    views = evaluation.evaluate(model, frame, root, cfg, split="test").summary["slices"]["view"]
    assert decision.candidate_slices == {view: stats["dice_median"] for view, stats in views.items()}
    assert set(decision.candidate_slices) == {"Front", "FrontRight", "Back"} and decision.n_test == len(frame)
    assert first.tags["run_id"] == run_id and first.tags["data_version"] == "blobs-v1"
    assert "challenger" in registry.show(cfg)["challenger"]["aliases"]


def test_a_logged_model_pins_what_it_needs_to_load(cfg: Config) -> None:
    """The requirements are given, not inferred by loading the model, and pinned to this environment."""
    import mlflow
    import tensorflow as tf

    version = registry.register(_train_run(cfg, GOOD), cfg).version
    mlflow.set_registry_uri(cfg.tracking_uri)  # not an earlier test's (dropped) registry
    requirements = Path(
        mlflow.pyfunc.get_model_dependencies(f"models:/{cfg.registry.model_name}/{version}")
    ).read_text()
    pinned = dict(line.split("==") for line in requirements.split())
    assert pinned["tensorflow"] == tf.__version__ and pinned["numpy"] == np.__version__
    assert pinned["mlflow"] == mlflow.__version__


def test_a_slice_that_drops_too_far_is_rejected() -> None:
    """Same overall median but one view collapses: the slice rule catches what the median hides."""
    decision = gate.GateDecision(
        model_name="m",
        candidate_version="2",
        champion_version="1",
        data_version="d",
        candidate_score=0.95,
        champion_score=0.95,
        floor=0.8,
        slice_tolerance=0.01,
        candidate_slices={"Front": 0.97, "Back": 0.90},
        champion_slices={"Front": 0.95, "Back": 0.95},
    )
    decided = gate._decide(decision)
    assert decided.verdict == "reject" and "view Back" in decided.reason


def test_processes_sharing_a_migrated_sqlite_store_do_not_collide(tmp_path: Path) -> None:
    """MLflow migrates a fresh SQLite store on first touch, and processes doing it together collide (the
    demo's two Bento servers did). After `migrate_tracking_store` the same processes only read."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    registry.migrate_tracking_store(
        load_config("demo", ROOT / "params.yaml", overrides={"registry": {"tracking_uri": uri}})
    )
    touch = (
        "import sys; from mlflow import MlflowClient; from mlflow.exceptions import MlflowException\n"
        "try: MlflowClient(sys.argv[1], sys.argv[1]).get_registered_model('nobody')\n"
        "except MlflowException as exc: sys.exit(0 if 'not found' in str(exc) else 1)"
    )
    readers = [subprocess.Popen([sys.executable, "-c", touch, uri], stderr=subprocess.PIPE) for _ in range(3)]
    failures = [p.stderr.read().decode()[-2000:] for p in readers if p.wait(timeout=180) != 0]
    assert not failures, failures

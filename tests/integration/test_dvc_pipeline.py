"""The whole `dvc.yaml` under real DVC: `dvc repro` runs synth -> index -> prepare -> train -> evaluate in a
temporary git + DVC project (the project's own stages and commands, a tiny model through params.yaml), and
DVC reads back the metrics and plots the stages declare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from garmentseg.data import versioning

pytestmark = pytest.mark.slow(minutes=2)  # a real `dvc repro` of five stages: about a minute on 2 cores

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline") / "proj"
    (root / "data" / "batches").mkdir(parents=True)
    (root / "data" / "batches" / ".gitkeep").touch()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["demo"] = {
        "synth": {"garments": 8},
        "model": {"base_filters": 4, "depth": 2, "input_height": 48, "input_width": 32},
        "training": {"epochs": 2, "batch_size": 4},
        "evaluation": {"gallery_size": 1},
        "inference": {"refine": "guided"},  # dvc.yaml's train stage reads profiles.demo.inference
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(ROOT / "src" / "garmentseg", root / "src" / "garmentseg")  # the stages' code deps
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.init(root, "var/dvc-remote")
    with pytest.MonkeyPatch.context() as mp:  # the stages call `garmentseg` and `python`: this venv's
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        versioning.dvc(["repro", "--quiet"], root)
    return root


def test_repro_runs_every_stage_and_locks_it(reproduced: Path) -> None:
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"synth", "index", "prepare", "train", "evaluate"}
    assert (reproduced / "reports" / "train" / "model_uri.txt").read_text().startswith("models:/")
    assert versioning.status(reproduced) == {}  # everything up to date right after the repro


def test_dvc_reads_the_declared_metrics_and_plots(reproduced: Path) -> None:
    shown = versioning.dvc(["metrics", "show", "--json"], reproduced)
    metrics = json.loads(shown.stdout)[""]["data"]
    train = metrics["reports/train/metrics.json"]["data"]
    evaluate = metrics["reports/evaluate/metrics.json"]["data"]
    assert 0.0 <= train["test_dice_median"] <= 1.0
    assert evaluate["n"] >= 1 and evaluate["dice_median"] == pytest.approx(
        train["test_dice_median"], abs=1e-6
    )
    for plot in ("reports/train/history.csv", "reports/evaluate/per_image.csv"):
        assert (reproduced / plot).read_text().count("\n") >= 2, plot

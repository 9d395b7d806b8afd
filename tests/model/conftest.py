"""One demo-size model per session, trained on a tiny drawn studio (no MLflow), for behavioural tests."""

from __future__ import annotations

import pytest

from garmentseg import prepare as prep
from garmentseg.config import load_config
from garmentseg.inference import CutoutModel
from garmentseg.training import fit
from tests.model.studio import make_studio, tiny_overrides


@pytest.fixture(scope="session")
def trained(tmp_path_factory, project_root) -> CutoutModel:
    tmp = tmp_path_factory.mktemp("behaviour")
    frame = make_studio(tmp / "studio", garments=24, height=96, width=64, seed=11)
    overrides = tiny_overrides(tmp, epochs=30)
    # Adam at 1e-3 converges within the fixture's ~500 steps; the seed's RMSprop 3e-4 needs more
    overrides["training"].update({"batch_size": 4, "optimizer": "adam", "learning_rate": 1e-3})
    cfg = load_config("demo", project_root / "params.yaml", overrides=overrides)
    prepared = prep.prepare_for(cfg, frame, tmp / "studio")
    model, _ = fit(cfg, prepared, log_to_mlflow=False)
    return CutoutModel(model, prepared.mean, prepared.std, 0.5, prepared.input_height, prepared.input_width)

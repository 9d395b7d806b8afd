"""A new model chooses its edge refinement on the validation split (evaluation.choose_refinement)."""

from __future__ import annotations

import dataclasses

import pytest

from garmentseg import evaluation
from garmentseg.config import load_config
from garmentseg.edges import Refinement, describe
from tests.model.studio import make_studio, tiny_overrides

GUIDED = {"refine": "guided", "guide": "colour", "radius": 8, "eps": 0.001, "subsample": 2}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("choice")
    return tmp, make_studio(tmp / "studio", garments=12, height=96, width=64, seed=5)


def _cfg(project_root, tmp, **inference):
    overrides = tiny_overrides(tmp)
    overrides["inference"] = {**GUIDED, **inference}
    return load_config("demo", project_root / "params.yaml", overrides=overrides)


def test_the_model_keeps_the_candidate_with_the_best_validation_boundary_f(trained, studio, project_root):
    tmp, frame = studio
    cfg = _cfg(project_root, tmp, candidates=[{"refine": "none"}, {"radius": 3}], choice_dice_tolerance=1.0)
    model = dataclasses.replace(trained, refinement=Refinement.from_config(cfg.inference))
    chosen = evaluation.choose_refinement(model, frame, tmp / "studio", cfg)

    rows = {row["refinement"]: row for row in chosen.candidates}
    assert set(rows) == {"guided:colour:8:0.001:2", "none", "guided:colour:3:0.001:2"}
    best = max(rows.values(), key=lambda row: row["valid_bf_score_median"])  # every one within tolerance 1
    assert [row["chosen"] for row in rows.values()].count(True) == 1 and best["chosen"]
    assert describe(chosen.refinement) == best["refinement"]
    # the threshold kept is the one tuned under that refinement, and the figures are that threshold's
    alone = evaluation.tune_threshold(
        dataclasses.replace(model, refinement=chosen.refinement), frame, tmp / "studio", cfg
    )
    assert chosen.threshold.threshold == alone.threshold == best["threshold"]
    assert best["valid_dice_median"] == pytest.approx(alone.valid_summary["dice_median"])


class CountingNetwork:
    """The trained network, counting its forward passes."""

    def __init__(self, network):
        self.network, self.calls = network, 0

    def predict_on_batch(self, batch):
        self.calls += 1
        return self.network.predict_on_batch(batch)


def test_the_candidates_share_the_network_s_passes_over_valid(trained, studio, project_root):
    tmp, frame = studio
    cfg = _cfg(project_root, tmp, candidates=[{"refine": "none"}, {"radius": 3}, {"radius": 5}])
    network = CountingNetwork(trained.keras_model)
    model = dataclasses.replace(
        trained, keras_model=network, refinement=Refinement.from_config(cfg.inference)
    )
    evaluation.tune_threshold(model, frame, tmp / "studio", cfg)
    one_pass, network.calls = network.calls, 0
    chosen = evaluation.choose_refinement(model, frame, tmp / "studio", cfg)
    assert len(chosen.candidates) == 4 and one_pass > 0
    # one pass to tune each candidate's threshold, one to score its edges there: not two per candidate
    assert network.calls == 2 * one_pass


def test_a_candidate_losing_more_validation_dice_than_the_tolerance_is_never_kept(
    trained, studio, project_root
):
    tmp, frame = studio
    cfg = _cfg(project_root, tmp, candidates=[{"refine": "none"}, {"radius": 3}], choice_dice_tolerance=0.0)
    model = dataclasses.replace(trained, refinement=Refinement.from_config(cfg.inference))
    chosen = evaluation.choose_refinement(model, frame, tmp / "studio", cfg)
    best_dice = max(row["valid_dice_median"] for row in chosen.candidates)
    kept = next(row for row in chosen.candidates if row["chosen"])
    assert kept["valid_dice_median"] == best_dice


def test_without_candidates_the_configured_refinement_is_kept_untried(trained, studio, project_root):
    tmp, frame = studio
    cfg = _cfg(project_root, tmp)
    model = dataclasses.replace(trained, refinement=Refinement.from_config(cfg.inference))
    chosen = evaluation.choose_refinement(model, frame, tmp / "studio", cfg)
    assert chosen.refinement == Refinement.from_config(cfg.inference) and chosen.candidates == []


def test_an_unknown_candidate_key_or_value_is_refused_before_training(project_root, tmp_path):
    with pytest.raises(ValueError, match="radius_px"):
        _cfg(project_root, tmp_path, candidates=[{"radius_px": 12}])
    with pytest.raises(ValueError, match="refine='sharpen'"):
        _cfg(project_root, tmp_path, candidates=[{"refine": "sharpen"}])

"""Training end to end on real engines: a tiny drawn studio, a real SQLite MLflow, the logged model loaded
back through inference, evaluation and the CLI. It trains with the guided edge refinement on, so tuning,
evaluation, the logged model and predict all go through the refined probability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from garmentseg import evaluation
from garmentseg.cli import main
from garmentseg.config import load_config
from garmentseg.edges import describe, refinement_candidates
from garmentseg.imageio import read_image, write_png
from garmentseg.inference import CutoutModel, load_cutout_model
from garmentseg.model.unet import build_unet
from garmentseg.training import train_on_frame
from tests.model.studio import draw_shot, make_studio, tiny_overrides

pytestmark = pytest.mark.slow(minutes=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, project_root):
    tmp = tmp_path_factory.mktemp("training")
    frame = make_studio(tmp / "studio", garments=18, height=96, width=64, seed=3)
    overrides = tiny_overrides(tmp, epochs=15)
    overrides["training"].update({"batch_size": 4, "optimizer": "adam", "learning_rate": 1e-3})
    # a second candidate, so the run makes (and records) the choice a real-profile run makes
    overrides["inference"] = {"refine": "guided", "radius": 4, "subsample": 1, "candidates": [{"radius": 2}]}
    # and an estimate that reads the model's own map, as the real profile's does
    overrides.setdefault("review", {})["estimate_map"] = "model"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        cfg = load_config("demo", project_root / "params.yaml", overrides=overrides)
        result = train_on_frame(cfg, frame, tmp / "studio", out_dir=tmp / "out")
    return cfg, frame, tmp, result


def test_training_provably_learns(trained_run):
    cfg, frame, tmp, result = trained_run
    import keras

    keras.utils.set_random_seed(cfg.training.seed)
    untrained = CutoutModel(
        build_unet(cfg.model), (0.5,) * 3, (0.25,) * 3, 0.5, cfg.model.input_height, cfg.model.input_width
    )
    baseline = evaluation.tune_threshold(untrained, frame, tmp / "studio", cfg).valid_summary["dice_median"]
    assert result.metrics["valid_dice_median"] > 0.8
    assert result.metrics["valid_dice_median"] > baseline + 0.3
    assert result.metrics["test_dice_median"] > 0.8


def test_the_run_carries_params_metrics_artifacts_and_lineage(trained_run):
    from mlflow import MlflowClient

    cfg, _, _, result = trained_run
    client = MlflowClient(cfg.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["model.arch"] == "carvana" and run.data.params["training.optimizer"] == "adam"
    for key in ("test_dice_median", "valid_dice_median", "test_iou_median", "test_dice_p10", "threshold"):
        assert key in run.data.metrics
    assert "test_dice_median_view_Front" in run.data.metrics
    assert "test_boundary_iou_2pct_median" in run.data.metrics
    assert {"test_halo_median", "test_bf_score_median_view_Front", "test_halo_median_view_Back"} <= set(
        run.data.metrics
    )
    assert len(client.get_metric_history(result.run_id, "val_loss")) == result.metrics["epochs_trained"]
    assert run.data.tags["data_version"].startswith("index:") and run.data.tags["git_commit"]
    assert len(run.inputs.dataset_inputs) == 1 and run.inputs.dataset_inputs[0].dataset.digest
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"curves.png", "history.csv", "metrics.json", "threshold_sweep.csv", "evaluation"} <= artifacts
    report = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/per_image.csv", "evaluation/dice_hist.png", "evaluation/gallery"} <= report
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith("file://")


def test_the_logged_model_loads_by_run_alias_and_version_with_its_preprocessing(trained_run):
    import mlflow

    cfg, _, _, result = trained_run
    mlflow.set_tracking_uri(cfg.tracking_uri)
    version = mlflow.register_model(result.model_uri, "fixture-unet")
    mlflow.MlflowClient(cfg.tracking_uri).set_registered_model_alias(
        "fixture-unet", "champion", version.version
    )
    by_uri = load_cutout_model(result.model_uri, cfg.tracking_uri)
    by_run = load_cutout_model(f"runs:/{result.run_id}/model", cfg.tracking_uri)
    by_alias = load_cutout_model("models:/fixture-unet@champion", cfg.tracking_uri)
    assert (by_alias.model_name, by_alias.model_version) == ("fixture-unet", str(version.version))
    assert by_uri.threshold == pytest.approx(result.metrics["threshold"])
    assert by_uri.flag_threshold == pytest.approx(result.metrics["flag_threshold"])
    assert (by_uri.input_height, by_uri.input_width) == (cfg.model.input_height, cfg.model.input_width)
    assert by_run.mean == by_uri.mean and by_alias.std == by_uri.std
    # the refinement the run chose on valid, among the configured one and its candidate, travels with it
    run = mlflow.MlflowClient(cfg.tracking_uri).get_run(result.run_id)
    assert by_alias.refinement == by_uri.refinement in refinement_candidates(cfg.inference)
    assert run.data.tags["refinement"] == describe(by_uri.refinement)
    choice = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=result.run_id, artifact_path="refinement_choice.csv", tracking_uri=cfg.tracking_uri
        )
    )
    assert choice.loc[choice["chosen"], "refinement"].tolist() == [describe(by_uri.refinement)]
    assert choice.loc[choice["chosen"], "threshold"].item() == pytest.approx(by_uri.threshold)
    shot, _ = draw_shot(np.random.default_rng(0), 96, 64)
    assert np.allclose(by_uri.predict_proba([shot])[0], by_alias.predict_proba([shot])[0], atol=1e-6)
    pyfunc = mlflow.pyfunc.load_model(result.model_uri)
    batch = np.stack([by_uri.preprocess(shot)])
    assert np.allclose(np.asarray(pyfunc.predict(batch))[..., 0], by_uri.predict_small(batch), atol=1e-5)
    model_id = result.model_uri.removeprefix("models:/")
    files = mlflow.MlflowClient(cfg.tracking_uri).list_logged_model_artifacts(model_id, "extra_files")
    assert [f.path for f in files] == ["extra_files/preprocessing.json"]


def test_the_quality_estimate_is_calibrated_on_valid_and_travels_with_the_model(trained_run):
    from mlflow import MlflowClient

    cfg, frame, tmp, result = trained_run
    model = load_cutout_model(result.model_uri, cfg.tracking_uri)
    quality = model.quality
    assert quality is not None and quality.target_dice == cfg.review.target_dice
    assert quality.fitted_on == int((frame["split"] == "valid").sum())
    assert quality.policy == f"target_recall={cfg.review.target_recall:g}"
    artifacts = {a.path for a in MlflowClient(cfg.tracking_uri).list_artifacts(result.run_id)}
    assert "quality_estimate.json" in artifacts
    image = read_image(tmp / "studio" / frame.iloc[0]["raw_path"], max_pixels=cfg.validation.max_pixels)
    maps = model.predict_maps([image])[0]
    estimate, needs_review = model.review(maps)
    assert 0.0 <= estimate <= 1.0 and needs_review == (estimate <= quality.review_below)
    assert quality.reads == "model" and estimate == quality.estimate(maps.small, model.threshold)
    assert 0.0 <= result.metrics["test_review_share"] <= 1.0


def test_evaluating_the_logged_model_reproduces_the_training_metrics(trained_run, tmp_path):
    cfg, frame, tmp, result = trained_run
    model = load_cutout_model(result.model_uri, cfg.tracking_uri)
    report = evaluation.evaluate(model, frame, tmp / "studio", cfg, split="test")
    assert report.summary["dice_median"] == pytest.approx(result.metrics["test_dice_median"], abs=1e-6)
    assert len(report.per_image) == (frame["split"] == "test").sum()
    assert set(report.summary["slices"]["view"]) == {"Front", "FrontRight", "Back"}
    assert "complex_pattern" in report.summary["slices"]["difficulty"]
    assert report.summary["refine"] == "guided"
    assert report.summary["halo_median"] == pytest.approx(result.metrics["test_halo_median"], abs=1e-6)
    for stats in report.summary["slices"]["view"].values():
        assert {"bf_score_median", "boundary_iou_0p5pct_median", "halo_median"} <= set(stats)
    paths = evaluation.write_report(report, tmp_path / "report")
    assert all(p.exists() for p in paths.values())
    assert "<img" in paths["gallery"].read_text()
    assert json.loads(paths["metrics"].read_text())["n"] == len(report.per_image)
    mirrored = evaluation.evaluate(model, frame, tmp / "studio", cfg, split="test", flip=True, gallery=False)
    assert report.summary["flip_tta"] is False and mirrored.summary["flip_tta"] is True


def test_predict_cli_writes_cutouts_and_masks_and_names_bad_files(trained_run, tmp_path):
    cfg, _, _, result = trained_run
    shots = tmp_path / "in"
    for i in range(2):
        write_png(shots / f"shot{i}.png", draw_shot(np.random.default_rng(i), 96, 64)[0])
    (shots / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(
        main,
        ["predict", "--model-uri", result.model_uri, str(shots), str(out)],
        env={
            "MLFLOW_TRACKING_URI": cfg.tracking_uri,
            "GARMENTSEG__REVIEW__DATABASE": f"sqlite:///{tmp_path}/review.db",
            "GARMENTSEG__REVIEW__STORAGE_DIR": str(tmp_path / "review"),
        },
    )
    assert res.exit_code == 1, res.output
    assert "broken.png" in res.stderr and "2 cutouts written" in res.stdout
    cutout = read_image(out / "cutouts" / "shot0.png", max_pixels=10**6, alpha=True)
    mask = read_image(out / "masks" / "shot1.png", max_pixels=10**6)
    assert cutout.shape == (96, 64, 4) and mask.shape[:2] == (96, 64)
    assert set(np.unique(cutout[..., 3])) <= {0, 255} and cutout[..., 3].any()
    assert (out / "scores.csv").read_text().count("\n") == 3

    soft = tmp_path / "soft"
    res = runner.invoke(
        main,
        ["predict", "--model-uri", result.model_uri, "--no-queue", str(shots), str(soft)],
        env={"MLFLOW_TRACKING_URI": cfg.tracking_uri, "GARMENTSEG__SERVING__ALPHA": "soft"},
    )
    assert res.exit_code == 1, res.output
    alpha = read_image(soft / "cutouts" / "shot0.png", max_pixels=10**6, alpha=True)[..., 3]
    binary = read_image(soft / "masks" / "shot0.png", max_pixels=10**6)[..., 0]
    first = read_image(out / "masks" / "shot0.png", max_pixels=10**6)[..., 0]
    assert np.array_equal(binary, first)  # the mask stays 0/255, whatever the alpha
    assert np.array_equal(alpha >= 128, binary > 0) and ((alpha > 0) & (alpha < 255)).any()


def test_evaluate_cli_on_a_contract_folder_prints_json(trained_run):
    cfg, frame, tmp, result = trained_run
    res = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--model-uri",
            result.model_uri,
            "--dataset",
            str(tmp / "studio"),
            "--split",
            "all",
            "--json",
        ],
        env={"MLFLOW_TRACKING_URI": cfg.tracking_uri},
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n"] == len(frame) and summary["dice_median"] > 0.8
    assert 0.0 <= summary["halo_median"] <= 1.0 and summary["bf_score_median"] > 0


def test_the_gpu_profiles_mixed_precision_under_mirrored_strategy_trains_here_too(tmp_path, project_root):
    """The gpu profile's switches (the pretrained encoder, mixed_float16, MirroredStrategy) on CPU: the path
    a GPU node takes runs, computes in float16, keeps float32 probabilities and finite losses."""
    from garmentseg.prepare import Prepared, SplitArrays
    from garmentseg.training import fit

    rng = np.random.default_rng(0)
    y = np.zeros((8, 32, 32), np.uint8)
    y[:, 8:24, 10:22] = 255
    x = rng.integers(150, 230, (8, 32, 32, 3), dtype=np.uint8)
    x[y > 0] = (60, 40, 90)
    split = SplitArrays(x, y, np.array([f"g{i}" for i in range(8)]), np.array(["Front"] * 8))
    prepared = Prepared({"train": split, "valid": split}, (0.6,) * 3, (0.2,) * 3, "hash", 32, 32, tmp_path)
    overrides = tiny_overrides(tmp_path, height=32, width=32, epochs=2)
    overrides["model"].update({"base_filters": 4, "depth": 2})
    overrides["training"].update({"batch_size": 4})
    cfg = load_config("gpu", project_root / "params.yaml", overrides=overrides)
    assert cfg.training.mixed_precision and cfg.training.distribute
    model, history = fit(cfg, prepared, log_to_mlflow=False)
    assert cfg.model.encoder == "efficientnet_lite0"  # the pretrained encoder, in float16 like the decoder
    assert model.get_layer("block1_stem").dtype_policy.name == "mixed_float16"
    assert model.get_layer("block1_stem").kernel.dtype == "float32"  # its variables stay float32
    out = np.asarray(model(np.zeros((1, 32, 32, 3), np.float32)))
    assert out.dtype == np.float32 and len(history["loss"]) == 2 and np.isfinite(history["val_loss"]).all()


def test_a_dataset_no_model_can_be_judged_on_is_refused_before_training(tmp_path, project_root):
    """A split without a garment, or masks that are all background (a model answering 'nothing' would score
    Dice 1 on them), is said at once, naming the dataset, not after the whole time budget."""
    from garmentseg.training import NotTrainable

    frame = make_studio(tmp_path / "studio", garments=6, height=48, width=32, seed=1)
    cfg = load_config("demo", project_root / "params.yaml", overrides=tiny_overrides(tmp_path))
    without_test = frame[frame["split"] != "test"]
    with pytest.raises(NotTrainable, match=r"pairs per split train \d+, valid \d+, test 0"):
        train_on_frame(cfg, without_test, tmp_path / "studio", source="studio-without-test")
    for cutout in (tmp_path / "studio" / "cutouts").glob("*.png"):
        blank = read_image(cutout, max_pixels=10**7, alpha=True)
        blank[..., 3] = 0
        write_png(cutout, blank)
    with pytest.raises(NotTrainable, match="every train mask is empty"):
        train_on_frame(cfg, frame, tmp_path / "studio", source="blank-studio")

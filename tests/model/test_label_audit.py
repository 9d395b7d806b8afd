"""The label audit ranks deliberately damaged labels first and names the damage, against a model whose
output is known by construction: the garments' red channel is high and the backdrop's low, and the model is a
1x1 convolution that calls a pixel garment where red exceeds a cutoff, so it segments every clean shot
exactly and any disagreement is the label's. The same shots are then audited through the command, with the
model registered as champion in a real (SQLite) MLflow registry."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from garmentseg.cli import main
from garmentseg.config import Config, load_config
from garmentseg.imageio import write_png
from garmentseg.inference import CutoutModel
from garmentseg.labels.audit import audit_labels
from garmentseg.labels.disagreement import describe, regions

ROOT = Path(__file__).resolve().parents[2]
H, W = 96, 64
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _shot(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A trapezoid garment (red 150..230) on a backdrop (red 40), and its exact mask."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 40
    img[..., 1:] = 140 + rng.integers(-5, 5, (H, W, 2))
    top, bottom = 10 + int(rng.integers(0, 6)), H - 8 - int(rng.integers(0, 6))
    poly = np.array([[22, top], [42, top], [54, bottom], [10, bottom]], np.int32)
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [poly], 255)
    img[..., 0] = np.where(mask > 0, rng.integers(150, 230, (H, W)), 40).astype(np.uint8)
    return img, mask


def _damage(kind: str, mask: np.ndarray) -> np.ndarray:
    """The retoucher's mistakes the audit must catch, one per kind."""
    out = mask.copy()
    ys, xs = np.nonzero(mask)
    if kind == "missing":  # the lower third left out (a hem, a back layer)
        out[ys.min() + 2 * (ys.max() - ys.min()) // 3 :] = 0
    elif kind == "hole":  # a hole punched inside the garment
        cy, cx = int(ys.mean()), int(xs.mean())
        out[cy - 8 : cy + 8, cx - 5 : cx + 5] = 0
    elif kind == "eroded":  # cut too thin all round
        out = cv2.erode(mask, np.ones((5, 5), np.uint8))
    elif kind == "dilated":  # cut too wide all round
        out = cv2.dilate(mask, np.ones((5, 5), np.uint8))
    elif kind == "spill":  # a blob of backdrop painted in beside the garment
        cv2.circle(out, (5, 6), 5, 255, -1)
    elif kind == "empty":  # saved with the alpha cleared
        out[:] = 0
    elif kind == "full":  # saved without cutting anything out
        out[:] = 255
    elif kind == "inverted":  # the selection inverted before the cut
        out = 255 - mask
    elif kind == "shifted":  # the mask layer nudged 8 px right on export
        out = np.roll(mask, 8, axis=1)
    return out


DAMAGE = {
    "missing": "missing",
    "hole": "hole",
    "eroded": "band",
    "dilated": "band",
    "spill": "spill",
    "empty": "empty",
    "full": "full",
    "inverted": "inverted",
    "shifted": "shifted",
}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Ten garments x three views in the data contract; nine labels damaged, one of each kind."""
    root = tmp_path_factory.mktemp("audit_batch")
    rng = np.random.default_rng(5)
    damaged: dict[str, str] = {}
    kinds = iter(DAMAGE)
    for g in range(10):
        gid = str(uuid.UUID(int=g + 1, version=4))
        for view in ("Front", "FrontRight", "Back"):
            img, mask = _shot(rng)
            if (view == "Front" and g % 2 == 0) or (view == "FrontRight" and g in (1, 3, 5, 7)):
                kind = next(kinds)
                mask = _damage(kind, mask)
                damaged[f"{gid}_{view}"] = kind
            write_png(root / "raw" / f"{gid}_{view}.png", img)
            write_png(root / "cutouts" / f"{gid}_{view}.png", np.dstack([img, mask]))
    return root, damaged


def _keras_cutoff(red_cutoff: float = 100.0):
    import keras

    inputs = keras.Input((H, W, 3))
    layer = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")
    model = keras.Model(inputs, layer(inputs))
    normalised = (red_cutoff / 255 - MEAN[0]) / STD[0]
    layer.set_weights(
        [np.array([20.0, 0, 0], np.float32).reshape(1, 1, 3, 1), np.array([-20.0 * normalised])]
    )
    return model


def _cfg(tmp: Path) -> Config:
    return load_config(
        "demo",
        ROOT / "params.yaml",
        overrides={
            "paths": {"reports_dir": str(tmp / "reports")},
            "labels": {"audit_height": H, "audit_width": W},
            "registry": {
                "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                "artifact_root": str(tmp / "artifacts"),
                "model_name": "audit-test",
            },
        },
    )


def test_damaged_labels_rank_first_with_their_kind(batch, tmp_path: Path) -> None:
    from garmentseg.data.index import load_dataset

    root, damaged = batch
    cfg = _cfg(tmp_path)
    frame, root = load_dataset(cfg, root)
    model = CutoutModel(_keras_cutoff(), MEAN, STD, 0.5, H, W)
    ranked = audit_labels(frame, root, model, cfg, out_dir=tmp_path / "out")

    assert len(ranked) == len(frame) == 30
    top = ranked[: len(damaged)]
    assert {s.file for s in top} == set(damaged), [(s.file, s.score) for s in ranked[:8]]
    for s in top:
        assert s.kind == DAMAGE[damaged[s.file]], (damaged[s.file], s.reason)
        assert Path(s.overlay).is_file()
    assert all(s.kind == "none" for s in ranked[len(damaged) :])
    assert min(s.score for s in top) > max(s.score for s in ranked[len(damaged) :])
    words = {s.kind: s.reason for s in top}
    assert words["band"].startswith("band along the edge: the label is too")
    assert words["spill"].startswith("spill onto the background")
    assert words["shifted"].startswith(
        "shifted: the label is offset from the garment the model sees by 8 px to the right"
    )


def test_a_filled_gap_and_a_sliver_are_told_apart() -> None:
    label = np.zeros((40, 40), bool)
    label[5:35, 5:35] = True
    pred = label.copy()
    pred[15:25, 15:25] = False  # the model sees a gap the label paints over
    pred[5:35, 34] = False  # a one-pixel edge offset: blur, not a finding
    found, small = regions(label, pred, min_share=0.01, band_px=4)
    assert [r.kind for r in found] == ["filled"] and small == 0


def test_a_label_eroded_or_dilated_by_many_pixels_is_a_band_not_a_missing_region_or_a_spill() -> None:
    pred = np.zeros((432, 288), np.uint8)  # a garment with sleeves, at the audit's size
    cv2.fillPoly(pred, [np.array([[90, 60], [198, 60], [230, 380], [58, 380]], np.int32)], 1)
    cv2.rectangle(pred, (40, 70), (248, 110), 1, -1)
    ring = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))  # 8 px all round: twice band_px
    sleeve_left_out = pred.copy()
    sleeve_left_out[60:115, 200:] = 0
    spilled = pred.copy()
    cv2.circle(spilled, (240, 300), 30, 1, -1)
    cases = {
        "eroded": (cv2.erode(pred, ring), "band", "thin (eroded)"),
        "dilated": (cv2.dilate(pred, ring), "band", "wide (dilated)"),
        "sleeve": (sleeve_left_out, "missing", "missing region"),
        "blob": (spilled, "spill", "spill onto the background"),
    }
    for name, (label, kind, words) in cases.items():
        found, small = regions(label.astype(bool), pred.astype(bool), min_share=0.004, band_px=4)
        got, reason = describe(found, small, int(label.sum()), 0.004)
        assert (got, words in reason) == (kind, True), (name, reason)


def test_a_nearly_empty_label_is_named_so_not_given_a_share_over_100_percent() -> None:
    pred = np.zeros((60, 40), bool)
    pred[5:55, 5:35] = True  # the garment the model sees
    label = np.zeros_like(pred)
    label[28:31, 18:21] = True  # a 3x3 blob: what was left of the label
    found, small = regions(label, pred, min_share=0.01, band_px=4)
    _kind, reason = describe(found, small, int(label.sum()), 0.01)
    assert "x the label's area: the label is nearly empty" in reason and "%" not in reason.split(";")[0]


def test_fine_detail_the_model_misses_is_scattered() -> None:
    label = np.zeros((60, 40), bool)
    label[5:55, 5:35] = True
    pred = label.copy()
    label[8:52:6, 8:32:6] = False  # eyelets: holes too small to be regions on their own
    label[9:53:6, 8:32:6] = False
    found, small = regions(label, pred, min_share=0.005, band_px=4)
    assert found == [] and small == 64
    kind, reason = describe(found, small, int(label.sum()), 0.005)
    assert kind == "scattered" and reason.startswith("scattered: many small disagreements (4.")


def _champion(cfg: Config) -> None:
    import mlflow
    from mlflow import MlflowClient

    from garmentseg.inference import log_cutout_model

    mlflow.set_tracking_uri(cfg.tracking_uri)
    experiment = mlflow.create_experiment("audit", artifact_location=cfg.registry.artifact_root)
    with mlflow.start_run(experiment_id=experiment):
        uri = log_cutout_model(
            _keras_cutoff(),
            mean=MEAN,
            std=STD,
            threshold=0.5,
            flag_threshold=50.0,
            input_height=H,
            input_width=W,
        )
    version = mlflow.register_model(uri, cfg.registry.model_name).version
    MlflowClient(cfg.tracking_uri).set_registered_model_alias(cfg.registry.model_name, "champion", version)


def test_command_ranks_with_the_champion_and_refuses_without_one(batch, tmp_path: Path, monkeypatch) -> None:
    root, damaged = batch
    cfg = _cfg(tmp_path)
    monkeypatch.setenv("GARMENTSEG__PATHS__REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("GARMENTSEG__LABELS__AUDIT_HEIGHT", str(H))
    monkeypatch.setenv("GARMENTSEG__LABELS__AUDIT_WIDTH", str(W))
    monkeypatch.setenv("GARMENTSEG__REGISTRY__TRACKING_URI", cfg.registry.tracking_uri)
    monkeypatch.setenv("GARMENTSEG__REGISTRY__ARTIFACT_ROOT", cfg.registry.artifact_root)
    monkeypatch.setenv("GARMENTSEG__REGISTRY__MODEL_NAME", cfg.registry.model_name)
    runner = CliRunner()
    args = ["labels", "audit", str(root), "--json", "--profile", "demo"]

    not_a_batch = runner.invoke(main, ["labels", "audit", str(tmp_path), "--json"])
    assert not_a_batch.exit_code == 2 and "not a batch in the data contract" in not_a_batch.output

    refused = runner.invoke(main, args)
    assert refused.exit_code == 2, refused.output
    assert "no champion" in refused.output and "audit-test" in refused.output
    assert cfg.tracking_uri in refused.output

    _champion(cfg)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    suspects = json.loads(result.stdout)["suspects"]
    assert len(suspects) == 30
    assert {s["file"] for s in suspects[: len(damaged)]} == set(damaged)
    assert set(suspects[0]) == {
        "file",
        "score",
        "kind",
        "reason",
        "decision",
        "in_sample",
        "overlay",
        "excluded",
    }
    page = (tmp_path / "reports" / "labels" / root.name / "index.html").read_text()
    assert f"garmentseg labels confirm|release {suspects[0]['file']} --data {root.resolve()}" in page
    cutoff = json.loads(result.stdout)["exclude_score"]  # labels.exclude_score
    assert [s["excluded"] for s in suspects] == [s["score"] >= cutoff for s in suspects]
    assert page.count("(a retrain leaves it out)") == sum(s["excluded"] for s in suspects) > 0
    assert Path(suspects[0]["overlay"]).is_relative_to(tmp_path / "reports" / "labels")

    broken = shutil.copytree(root, tmp_path / "broken")  # a cutout cut short after indexing: named, exit 2
    victim = sorted((broken / "cutouts").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:-200])
    stopped = runner.invoke(main, ["labels", "audit", str(broken), "--json", "--profile", "demo"])
    assert (
        stopped.exit_code == 2 and str(victim) in stopped.output and "garmentseg validate" in stopped.output
    )

    resized = shutil.copytree(root, tmp_path / "resized")  # a cutout saved at half size: named, exit 2
    victim = sorted((resized / "cutouts").glob("*.png"))[0]
    write_png(victim, np.zeros((H // 2, W // 2, 4), np.uint8))
    stopped = runner.invoke(main, ["labels", "audit", str(resized), "--json", "--profile", "demo"])
    assert stopped.exit_code == 2 and "differs from shot" in stopped.output, stopped.output

    partial = shutil.copytree(root, tmp_path / "partial")  # a shot whose cutout never came: said, not hidden
    orphan = sorted((partial / "cutouts").glob("*.png"))[0]
    orphan.unlink()
    named = runner.invoke(main, ["labels", "audit", str(partial), "--json", "--profile", "demo"])
    assert named.exit_code == 0 and f"not audited: raw/{orphan.name}: has no partner" in named.stderr
    assert json.loads(named.stdout)["not_audited"] == [f"raw/{orphan.name}: has no partner"]
    page = (tmp_path / "reports" / "labels" / "partial" / "index.html").read_text()
    assert f"Not audited (1)</h2><ul><li>raw/{orphan.name}: has no partner" in page
    for side in ("raw", "cutouts"):
        for png in (partial / side).glob("*.png"):
            png.unlink()
    nothing = runner.invoke(main, ["labels", "audit", str(partial), "--json", "--profile", "demo"])
    assert nothing.exit_code == 2 and "no labelled pairs to audit" in nothing.output, nothing.output

    released = suspects[0]["file"]
    done = runner.invoke(main, ["labels", "release", released, "--data", str(root), "--profile", "demo"])
    assert done.exit_code == 0, done.output
    again = json.loads(runner.invoke(main, args).stdout)["suspects"]
    assert again[-1]["file"] == released and again[-1]["reason"].startswith("released as right")
    assert (again[-1]["decision"], again[-1]["excluded"]) == ("released", False)
    assert {s["file"] for s in again[: len(damaged) - 1]} == set(damaged) - {released}

    # A steward confirms a damaged label: it stays out of training and enters the retouchers' queue.
    monkeypatch.setenv("GARMENTSEG__REVIEW__DATABASE", f"sqlite:///{tmp_path}/review.db")
    monkeypatch.setenv("GARMENTSEG__REVIEW__STORAGE_DIR", str(tmp_path / "review"))
    confirmed = suspects[1]["file"]
    done = runner.invoke(main, ["labels", "confirm", confirmed, "--data", str(root), "--profile", "demo"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["state"] == "retouch"
    queue = json.loads(runner.invoke(main, ["review", "list", "--json", "--profile", "demo"]).stdout)
    assert [(i["file"], i["state"]) for i in queue["items"]] == [(confirmed, "retouch")]
    # A steward who changes their mind: released, the retouch is withdrawn; confirmed again, back in retouch.
    undone = runner.invoke(main, ["labels", "release", confirmed, "--data", str(root), "--profile", "demo"])
    assert undone.exit_code == 0 and json.loads(undone.stdout)["withdrawn_review_items"], undone.output
    queue = json.loads(runner.invoke(main, ["review", "list", "--json", "--profile", "demo"]).stdout)
    assert [(i["file"], i["state"]) for i in queue["items"]] == [(confirmed, "accepted")]
    done = runner.invoke(main, ["labels", "confirm", confirmed, "--data", str(root), "--profile", "demo"])
    assert done.exit_code == 0 and json.loads(done.stdout)["state"] == "retouch", done.output

    # The retrain's screening with the same champion: the damaged labels are left out, and recorded.
    import mlflow

    from garmentseg.data.index import load_dataset
    from garmentseg.labels.screen import drop_excluded, log_screening, read_exclusions, screen_training_set

    cfg = load_config("demo", ROOT / "params.yaml")  # the environment's overrides, as the task sees them
    frame, data_root = load_dataset(cfg, root)
    screening = screen_training_set(cfg, frame, data_root, name="retrain-test")
    summary = screening.summary()
    assert set(summary["excluded"]) == set(damaged) - {released}
    assert summary["in_sample"] == int(
        frame["split"].isin(["train", "valid"]).sum()
    )  # no training index logged
    exclusions = read_exclusions(screening.report.parent / "excluded.json")
    assert len(drop_excluded(frame, exclusions)) == len(frame) - len(damaged) + 1
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("audit").experiment_id) as run:
        log_screening(exclusions, summary["report"])
    logged = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/labels/excluded.json")
    assert {f"{e['garment_id']}_{e['view']}" for e in logged} == set(summary["excluded"])

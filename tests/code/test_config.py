from pathlib import Path

import pytest
import yaml

from garmentseg.config import ConfigError, deep_merge, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("profile", ["demo", "cpu", "gpu", "real"])
def test_every_profile_loads(profile: str) -> None:
    cfg = load_config(profile, ROOT / "params.yaml")
    assert cfg.profile == profile
    assert cfg.model.input_height % 2**cfg.model.depth == 0
    assert cfg.source.views


def test_profile_overrides_base_and_keeps_the_rest() -> None:
    demo = load_config("demo", ROOT / "params.yaml")
    gpu = load_config("gpu", ROOT / "params.yaml")
    assert gpu.model.input_height == 1024 and gpu.registry.dice_floor == pytest.approx(0.9832)
    assert demo.training.optimizer == gpu.training.optimizer == "rmsprop"
    assert demo.training.loss.w_bce == 0.5 and demo.training.loss.w_dice == 2.0


def _write(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    tree = _params()
    tree["training"]["optimizer"] = "adamw"
    with pytest.raises(ConfigError, match=r"training\.optimizer"):
        load_config("demo", _write(tmp_path, tree))


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    tree = _params()
    tree["model"]["base_filter"] = 8
    with pytest.raises(ConfigError, match=r"model\.base_filter"):
        load_config("demo", _write(tmp_path, tree))


def test_split_fractions_must_sum_to_one(tmp_path: Path) -> None:
    tree = _params()
    tree["data"]["splits"]["test"] = 0.5
    with pytest.raises(ConfigError, match=r"data\.splits"):
        load_config("demo", _write(tmp_path, tree))


def test_input_size_must_survive_pooling(tmp_path: Path) -> None:
    tree = _params()
    tree["profiles"]["demo"]["model"]["input_height"] = 100
    with pytest.raises(ConfigError, match="divisible"):
        load_config("demo", _write(tmp_path, tree))


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        ({"encoder_trainable": "none"}, "encoder is none"),
        ({"encoder_lr_scale": 0.1}, "encoder is none"),
        ({"encoder": "efficientnet_lite0", "encoder_lr_scale": 0}, "greater than 0"),
        ({"encoder": "vgg16_hed", "depth": 1, "input_height": 40, "input_width": 32}, "divisible by 16"),
        ({"encoder": "vgg16_hed", "arch": "basic"}, "carvana decoder"),
        ({"encoder": "resnet50"}, r"model\.encoder"),
    ],
)
def test_encoder_options_are_checked(model: dict, rule: str) -> None:
    with pytest.raises(ConfigError, match=rule):
        load_config("demo", ROOT / "params.yaml", overrides={"model": model})


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*demo"):
        load_config("nope", ROOT / "params.yaml")


def test_relative_sqlite_uri_hangs_off_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("demo", ROOT / "params.yaml")
    assert cfg.tracking_uri == f"sqlite:///{ROOT}/var/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    assert cfg.tracking_uri == "postgresql://db/mlflow"


def test_deep_merge_is_pure() -> None:
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 3}})
    assert merged == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_environment_overrides_any_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARMENTSEG__AIRFLOW__PLACEMENT", "kubernetes")
    monkeypatch.setenv("GARMENTSEG__TRAINING__EPOCHS", "3")
    cfg = load_config("demo", ROOT / "params.yaml")
    assert cfg.airflow.placement == "kubernetes" and cfg.training.epochs == 3
    monkeypatch.setenv("GARMENTSEG__AIRFLOW__PLACEMENT", "mars")
    with pytest.raises(ConfigError, match=r"airflow\.placement"):
        load_config("demo", ROOT / "params.yaml")


def test_a_sources_shot_rule_reads_the_suites_size_and_view_rules_off_one_shot() -> None:
    """What the review queue asks before it queues a shot: would its correction pass the source's rules."""
    from garmentseg.review.store import source_shot_problem

    sources = load_config("demo").sources
    studio, street = sources["studio"], sources["ccp"]
    assert source_shot_problem(studio, "Back", 1152, 1728) is None
    assert source_shot_problem(studio, "Back", 1728, 1152) == "1728x1152, expected 1152x1728"
    assert source_shot_problem(street, "Front", 800, 1200) is None
    assert source_shot_problem(street, "Back", 800, 1200) == "view Back is not one of Front"
    assert source_shot_problem(street, "Front", 300, 450) == "300x450, expected 400..1200 x 600..1800"
    assert source_shot_problem(street, "Front", 900, 1200) == "900x1200: aspect 0.750, expected 0.6667 ± 0.06"
    relaxed = studio.model_copy(update={"warn_only": ("resolution", "file_name")})
    assert source_shot_problem(relaxed, "Front", 288, 448) is None  # validation would only warn: queue it
    assert (
        source_shot_problem(street.model_copy(update={"warn_only": ("file_name",)}), "Back", 800, 1200)
        is None
    )


@pytest.mark.parametrize(
    ("environ", "rule"),
    [
        ({"GARMENTSEG__REGISTRY__DICE_FLOOR": "[1"}, "not a YAML value"),
        ({"GARMENTSEG__": "x"}, "GARMENTSEG__: name a key after it"),
        ({"GARMENTSEG__TRAINING": "5", "GARMENTSEG__TRAINING__EPOCHS": "3"}, "a value and keys at once"),
    ],
)
def test_a_bad_environment_override_is_one_config_error(environ: dict[str, str], rule: str) -> None:
    from garmentseg.config import env_overrides

    with pytest.raises(ConfigError, match=rule):
        env_overrides(environ)


def test_a_dag_run_may_not_lower_the_gates_floor() -> None:
    from garmentseg.orchestration.tasks import config_for

    assert config_for({"overrides": {"training": {"epochs": 1}}}).training.epochs == 1
    with pytest.raises(ConfigError, match="may not change `registry`"):
        config_for({"overrides": {"registry": {"dice_floor": 0.0}}})

"""params.yaml -> typed, validated configuration; the one place settings are read.

A profile (demo | cpu | gpu | real) is deep-merged over the base sections. Every section forbids unknown
keys, so a typo fails loudly with the dotted key in the message instead of being silently ignored.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from garmentseg.model.encoders import PRETRAINED

VIEWS = ("Front", "FrontRight", "Back")
PARAMS_ENV = "GARMENTSEG_PARAMS"
PROFILE_ENV = "GARMENTSEG_PROFILE"
# GARMENTSEG__SECTION__KEY=value overrides params.yaml (values parsed as YAML), e.g.
# GARMENTSEG__AIRFLOW__PLACEMENT=kubernetes: production settings without editing the file.
OVERRIDE_ENV_PREFIX = "GARMENTSEG__"
# The project's own params.yaml (src layout: <root>/src/garmentseg/config.py).
PROJECT_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


class ConfigError(ValueError):
    """A params.yaml problem, worded for the person who edits the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    state_dir: Path
    data_dir: Path
    landing_dir: Path
    quarantine_dir: Path
    reports_dir: Path
    deliveries_dir: Path  # new shots to cut out, one folder per delivery (the weekly review job)
    cutouts_dir: Path  # the weekly job's cutouts, one folder per delivery
    dvc_remote: str  # a path (from the project root) or a URL such as s3://bucket/prefix (data/store.py)


class SplitConfig(_Section):
    seed: int
    train: float = Field(gt=0, lt=1)
    valid: float = Field(ge=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must be 1.0, got {total:.4f}")
        return self


class DataConfig(_Section):
    source: str
    views: tuple[Literal["Front", "FrontRight", "Back"], ...]
    splits: SplitConfig


class SourceConfig(_Section):
    """What a batch from one source must look like: an exact size, or a size range and aspect."""

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    min_width: int | None = Field(default=None, gt=0)
    max_width: int | None = Field(default=None, gt=0)
    min_height: int | None = Field(default=None, gt=0)
    max_height: int | None = Field(default=None, gt=0)
    aspect: float | None = Field(default=None, gt=0)
    aspect_tolerance: float = Field(default=0.0, ge=0)
    views: tuple[Literal["Front", "FrontRight", "Back"], ...] = VIEWS
    require_all_views: bool = True
    # Checks whose findings only warn for this source: the steward sees them in the report, but a delivery
    # is not refused for them (e.g. the labels of an outside dataset, which nobody here can fix).
    warn_only: tuple[str, ...] = ()
    # Frame sides a garment's mask may never reach for this source (the studio frames the whole garment).
    mask_free_sides: tuple[Literal["top", "bottom", "left", "right"], ...] = ()

    @model_validator(mode="after")
    def _exact_or_range(self) -> SourceConfig:
        exact = self.width is not None and self.height is not None
        ranged = None not in (self.min_width, self.max_width, self.min_height, self.max_height)
        if not (exact or ranged):
            raise ValueError("give width+height (exact size) or min/max_width+min/max_height (range)")
        return self

    @property
    def exact_size(self) -> tuple[int, int] | None:
        """(width, height) when the source demands one size, else None."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        return None


class HardCaseConfig(_Section):
    low_contrast: float = Field(ge=0, le=1)
    complex_pattern: float = Field(ge=0, le=1)
    dip_hem: float = Field(ge=0, le=1)
    noisy_truth: float = Field(ge=0, le=1)


class SynthConfig(_Section):
    garments: int = Field(gt=0)
    seed: int
    hard_cases: HardCaseConfig


class ValidationConfig(_Section):
    max_file_bytes: int = Field(gt=0)
    max_pixels: int = Field(gt=0)
    workers: int = Field(ge=1)
    alpha_partial_max_share: float = Field(ge=0, le=1)
    mask_area_min: float = Field(ge=0, le=1)
    mask_area_max: float = Field(gt=0, le=1)
    contrast_min: float = Field(ge=0)
    cutout_rgb_max_diff: float = Field(ge=0)
    contrast_band_px: int = Field(ge=1)
    gallery_size: int = Field(ge=0)
    drift_z_warn: float = Field(gt=0)
    alpha_inverted_border_share: float = Field(gt=0, le=1)
    edge_alignment_min: float = Field(ge=0, le=1)
    edge_search_share: float = Field(gt=0, le=0.5)
    near_duplicate_bits: int = Field(ge=0, le=256)
    near_duplicate_max_diff: float = Field(ge=0)


class LabelsConfig(_Section):
    """The label audit: the size it scores at, the reason's geometry, the retrain's exclusion threshold."""

    audit_height: int = Field(gt=0)
    audit_width: int = Field(gt=0)
    temperature: float = Field(gt=0)
    min_region_share: float = Field(ge=0, le=1)
    band_px: float = Field(gt=0)
    exclude_score: float = Field(ge=0, le=1)
    edge_weight: float = Field(ge=0, le=1)
    outline_scale: int = Field(ge=1)
    outline_ridge_px: int = Field(ge=1)
    outline_weight: float = Field(ge=0)


class ModelConfig(_Section):
    arch: Literal["simple", "basic", "carvana"]
    base_filters: int = Field(gt=0)
    depth: int = Field(ge=1, le=7)
    input_height: int = Field(gt=0)
    input_width: int = Field(gt=0)
    block: Literal["plain", "residual"]
    attention: bool
    # A pretrained encoder from an installed wheel (model/encoders.py) under the Carvana decoder, or none.
    encoder: Literal["none", "vgg16_hed", "efficientnet_lite0"]
    # Which encoder tap groups train: all | none (frozen) | blockN (groups N..5; the lower ones frozen).
    encoder_trainable: Literal["all", "none", "block2", "block3", "block4", "block5"]
    # The trainable encoder's learning rate as a share of training.learning_rate (discriminative rates: the
    # ImageNet features move slower than the fresh decoder); 1 trains both alike.
    encoder_lr_scale: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _divisible_by_pooling(self) -> ModelConfig:
        step = 2**self.depth
        for key in ("input_height", "input_width"):
            if getattr(self, key) % step:
                raise ValueError(f"{key}={getattr(self, key)} must be divisible by 2**depth={step}")
        return self

    @model_validator(mode="after")
    def _encoder_options(self) -> ModelConfig:
        if self.encoder == "none" and self.encoder_trainable != "all":
            raise ValueError("encoder_trainable applies to a pretrained encoder, and encoder is none")
        if self.encoder == "none" and self.encoder_lr_scale != 1:
            raise ValueError("encoder_lr_scale applies to a pretrained encoder, and encoder is none")
        if self.encoder != "none":
            # The coarsest tap's stride (VGG16 16, EfficientNet 32); depth describes the from-scratch U-Net only.
            step = PRETRAINED[self.encoder].stride
            for key in ("input_height", "input_width"):
                if getattr(self, key) % step:
                    raise ValueError(
                        f"{key}={getattr(self, key)} must be divisible by {step} for encoder {self.encoder}"
                    )
            if self.arch != "carvana":
                raise ValueError(f"encoder {self.encoder} takes the carvana decoder; arch is {self.arch}")
        return self


class LossConfig(_Section):
    w_bce: float = Field(ge=0)
    w_dice: float = Field(ge=0)
    w_boundary: float = Field(ge=0)
    # Weight of garment pixels in the BCE term (class balance: garments are ~16% of a street photo).
    pos_weight: float = Field(gt=0)


class AugmentConfig(_Section):
    hflip: bool
    hsv: bool
    shift_scale_rotate: bool
    # Limits of the random affine when shift_scale_rotate is on (the seed's: 0.01, 0.1, 5 degrees).
    shift_limit: float = Field(ge=0, lt=0.5)
    scale_limit: float = Field(ge=0, lt=1)
    rotate_limit_deg: float = Field(ge=0, le=180)
    # Colour jitter when hsv is on (images in 0..1): hue shift, saturation factor 1 +- delta, value shift.
    hue_delta: float = Field(ge=0, le=0.5)
    saturation_delta: float = Field(ge=0, lt=1)
    value_delta: float = Field(ge=0, lt=1)


class EarlyStoppingConfig(_Section):
    patience: int = Field(ge=1)
    min_delta: float = Field(ge=0)


class TrainingConfig(_Section):
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    optimizer: Literal["rmsprop", "adam", "sgd"]
    learning_rate: float = Field(gt=0)
    lr_schedule: Literal["constant", "plateau_cyclic", "cosine"]
    # Wall-clock cap on fitting (0 = none): training stops before an epoch that would overrun it, so a
    # profile's "trains in N minutes on this machine" holds whatever the epoch count says.
    time_budget_minutes: float = Field(ge=0)
    loss: LossConfig
    augment: AugmentConfig
    early_stopping: EarlyStoppingConfig
    mixed_precision: bool
    distribute: bool
    seed: int


class EvaluationConfig(_Section):
    threshold_grid: tuple[float, ...]
    outlier_iqr_k: float = Field(gt=0)
    boundary_fraction: tuple[float, ...]
    boundary_f_tolerance_px: int = Field(ge=0)
    flip_tta: bool
    gallery_size: int = Field(ge=0)
    halo_band_px: float = Field(gt=0)  # the cutout's inner edge band the halo metric scores (docs/method.md)


class InferenceConfig(_Section):
    """How a newly trained model refines its full-resolution probability (edges.Refinement): tuned and
    evaluated with it, and logged with it, so predict and the service refine the same way."""

    refine: Literal["none", "guided"]
    guide: Literal["grey", "colour"]
    radius: int = Field(ge=1)  # full-resolution pixels
    eps: float = Field(gt=0)
    subsample: int = Field(ge=1)
    # Other refinements tried on the validation split when a model is tuned, each a partial override of
    # the keys above (evaluation.choose_refinement); the best validation boundary F is kept with the model.
    candidates: tuple[dict[str, str | int | float], ...] = ()
    choice_dice_tolerance: float = Field(default=0.002, ge=0)

    @model_validator(mode="after")
    def _candidates_are_refinements(self) -> InferenceConfig:
        from garmentseg.edges import refinement_candidates

        refinement_candidates(self)  # raises on an unknown key or value, before any training
        return self


class RegistryConfig(_Section):
    model_name: str
    tracking_uri: str
    artifact_root: str
    experiment: str
    dice_floor: float = Field(ge=0, le=1)
    slice_tolerance: float = Field(ge=0, le=1)


class ServingConfig(_Section):
    host: str
    port: int = Field(gt=0, lt=65536)
    canary_port: int = Field(gt=0, lt=65536)
    review_port: int = Field(gt=0, lt=65536)  # the review page (`garmentseg review serve`)
    model_uri: str
    max_request_bytes: int = Field(gt=0)
    max_pixels: int = Field(gt=0)
    max_batch_size: int = Field(ge=2)  # BentoML's batchable APIs need max_batch_size > 1
    max_latency_ms: int = Field(gt=0)
    adaptive_batching: bool
    latency_budget_ms: int = Field(gt=0)
    auth_token_env: str
    reload_interval_s: float = Field(ge=0)
    workers: int = Field(ge=1)
    threads: int = Field(ge=1)
    timeout_s: int = Field(gt=0)
    max_concurrency: int = Field(ge=1)
    precision: Literal["float32", "bfloat16"]
    # The cutout's alpha: the mask (0/255), or its outline anti-aliased over one pixel (inference.cutout_alpha)
    alpha: Literal["binary", "soft"]


class KubernetesConfig(_Section):
    image: str
    namespace: str
    pod_template_file: str
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, str], ...]
    gpu_limit: int = Field(ge=0)


class TimeoutConfig(_Section):
    """execution_timeout of the DAG tasks in minutes: `default` for every task, then the slow steps."""

    default: float = Field(gt=0)
    prepare: float = Field(gt=0)
    train: float = Field(gt=0)
    evaluate: float = Field(gt=0)
    gate: float = Field(gt=0)
    serving_check: float = Field(gt=0)
    deploy: float = Field(gt=0)
    smoke_test: float = Field(gt=0)
    cut_out_deliveries: float = Field(gt=0)


class AirflowConfig(_Section):
    retrain_schedule: str
    ingest_schedule: str
    landing_settle_minutes: float = Field(ge=0)
    placement: Literal["celery", "kubernetes", "local"]
    gpu_queue: str
    dvc_pool: str
    retries: int = Field(ge=0)
    retry_delay_minutes: float = Field(ge=0)
    timeout_minutes: TimeoutConfig
    kubernetes: KubernetesConfig
    review_schedule: str
    # Promotion after a passing gate and canary check: at once (auto), or once a person approves it in
    # Airflow (human: Airflow's ApprovalOperator; no answer within approval_timeout_hours fails the run).
    approval: Literal["auto", "human"]
    approval_timeout_hours: float = Field(gt=0)
    # Airflow's public REST API, where a task writes a note on its DAG run (orchestration.run_notes).
    api_url: str = ""
    api_user_env: str = "AIRFLOW_API_USER"
    api_password_env: str = "AIRFLOW_API_PASSWORD"


class RetentionConfig(_Section):
    """What `garmentseg gc` and the monthly retention DAG let go, and after how long (garmentseg.retention)."""

    schedule: str
    landed_days: float = Field(ge=0)
    quarantine_days: float = Field(ge=0)
    reports_days: float = Field(ge=0)
    mlflow_run_days: float = Field(ge=0)
    data_version_days: float = Field(ge=0)


# The maps a Dice estimate may read (review.estimate_map); review/estimate.py checks stored estimates by it.
EstimateMap = Literal["refined", "model"]


class ReviewConfig(_Section):
    """The review loop: where the queue lives, and which cutouts a person must look at."""

    # SQLAlchemy URL: sqlite:///<path from the project root> embedded, postgresql://... in production.
    database: str
    storage_dir: Path  # the queued shots and proposed cutouts, copied here (never a caller's path)
    target_dice: float = Field(gt=0, le=1)  # a cutout estimated below this needs a person
    # The policy, turned into an estimate threshold at calibration time: review this share of all cutouts,
    # or as many as it takes to catch this share of the cutouts below target_dice. Exactly one is set.
    budget_share: float | None = Field(default=None, gt=0, le=1)
    target_recall: float | None = Field(default=None, gt=0, le=1)
    # The map the Dice estimate's features read: the refined one the cutout is made of, or the model's own
    # before refinement (which keeps the edge's doubt the refinement sharpens away). Measured per data set,
    # docs/real-photos.md#the-review-estimate.
    estimate_map: EstimateMap = "refined"

    @model_validator(mode="after")
    def _one_policy(self) -> ReviewConfig:
        if (self.budget_share is None) == (self.target_recall is None):
            raise ValueError("set exactly one of budget_share and target_recall")
        return self


class Config(_Section):
    """The resolved configuration of one profile, with paths made absolute against the project root."""

    profile: str
    root: Path
    paths: PathsConfig
    data: DataConfig
    sources: dict[str, SourceConfig]
    synth: SynthConfig
    validation: ValidationConfig
    labels: LabelsConfig
    model: ModelConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    inference: InferenceConfig
    registry: RegistryConfig
    serving: ServingConfig
    airflow: AirflowConfig
    review: ReviewConfig
    retention: RetentionConfig

    @model_validator(mode="after")
    def _source_exists(self) -> Config:
        if self.data.source not in self.sources:
            raise ValueError(
                f"data.source={self.data.source!r} is not one of sources: {sorted(self.sources)}"
            )
        return self

    def path(self, relative: str | Path) -> Path:
        """A project path: absolute paths stay, relative ones hang off the project root."""
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def source(self) -> SourceConfig:
        return self.sources[self.data.source]

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: $MLFLOW_TRACKING_URI wins; a relative sqlite path hangs off the root."""
        return self._rooted(os.environ.get("MLFLOW_TRACKING_URI") or self.registry.tracking_uri)

    @property
    def review_database(self) -> str:
        """The review queue's SQLAlchemy URL; a relative sqlite path hangs off the root."""
        return self._rooted(self.review.database)

    def _rooted(self, uri: str) -> str:
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
            return prefix + str(self.root / uri[len(prefix) :])
        return uri

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params and logs."""
        return _flatten(self.model_dump(mode="json", exclude={"root", "sources"}))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override wins key by key; nested mappings merge, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """GARMENTSEG__A__B=v -> {"a": {"b": v}}; the value is parsed as YAML so numbers and lists work."""
    tree: dict[str, Any] = {}
    for key, value in (os.environ if environ is None else environ).items():
        if not key.startswith(OVERRIDE_ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(OVERRIDE_ENV_PREFIX) :].split("__") if p]
        if not parts:
            raise ConfigError(f"{key}: name a key after it, e.g. {OVERRIDE_ENV_PREFIX}TRAINING__EPOCHS")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is given a value and keys at once")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"{key}={value!r}: not a YAML value ({first})") from None
    return tree


def find_params(start: Path | None = None) -> Path:
    """$GARMENTSEG_PARAMS, else the nearest params.yaml from the working directory up, else the repo's."""
    if env := os.environ.get(PARAMS_ENV):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "params.yaml"
        if candidate.is_file():
            return candidate
    if PROJECT_PARAMS.is_file():
        return PROJECT_PARAMS
    raise ConfigError(f"no params.yaml found from {here} upwards; set ${PARAMS_ENV}")


def load_config(
    profile: str | None = None,
    params_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load params.yaml, apply the profile and any overrides, and validate the result."""
    path = Path(params_path).resolve() if params_path else find_params()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read params: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    profiles = raw.pop("profiles", {}) or {}
    default_profile = raw.pop("profile", "demo")
    name = profile or os.environ.get(PROFILE_ENV) or default_profile
    if not isinstance(name, str) or not isinstance(profiles, dict):
        raise ConfigError(f"{path}: `profile` must name one of `profiles` (got profile {name!r})")
    if name not in profiles:
        raise ConfigError(f"{path}: profile {name!r} is not defined; profiles: {sorted(profiles)}")
    merged = deep_merge(raw, profiles[name] or {})
    merged = deep_merge(merged, env_overrides())
    if overrides:
        merged = deep_merge(merged, overrides)
    try:
        return Config(profile=name, root=path.parent, **merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        from_env = sorted(k for k in os.environ if k.startswith(OVERRIDE_ENV_PREFIX))
        env_note = f"; with {', '.join(from_env)} from the environment" if from_env else ""
        raise ConfigError(f"{path} (profile {name}{env_note}): {problems}") from exc

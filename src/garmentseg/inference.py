"""Preprocess -> predict -> postprocess: the one code path shared by evaluation, `garmentseg predict` and
the Bento service, plus the packaging of a trained U-Net as an MLflow model that carries its preprocessing.

The seed's two rules live here so nobody can drift from them: shrink with INTER_AREA, grow the probability
map back with INTER_CUBIC (the seed's largest single gain), and normalise with the training split's
per-channel mean/std. A model may also refine the grown probability on the full-resolution shot
(`edges.Refinement`, stored with it because its thresholds were tuned on the refined probability). TensorFlow and MLflow are imported only when a model is built or loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from garmentseg.edges import Refinement, refine_proba

if TYPE_CHECKING:
    from garmentseg.review.estimate import QualityEstimate

log = logging.getLogger(__name__)

# Stored inside the logged model (MLmodel metadata and this JSON file) so every loader normalises identically.
PREPROCESSING_FILE = "preprocessing.json"
METADATA_KEY = "garmentseg"
QUALITY_KEY = "quality_estimate"  # the calibrated Dice estimate inside the same metadata (review/estimate.py)
REFINE_KEY = "refine"  # the edge refinement its thresholds were tuned with (edges.Refinement)
# A probability strictly between these counts as "the model is unsure about this pixel".
UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.1, 0.9
# manual_cutout_score of a shot whose predicted mask is (nearly) empty: a studio shot always has a garment.
EMPTY_MASK_SCORE = 1000.0
EMPTY_MASK_SHARE = 0.002
# A garment's outline is at most a few times a disc's of the same area (sleeves, legs, hems); more is noise.
OUTLINE_CAP = 4.0
ALPHA_MODES = ("binary", "soft")  # serving.alpha: the cutout's alpha
# Input examples are stored as JSON; skip them above this many pixels (the 1024x1024 model's is ~60 MB).
MAX_EXAMPLE_PIXELS = 256 * 384


def resize_down(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Shrink (or, rarely, grow) an image or mask to the model's input size with INTER_AREA, dtype kept."""
    import cv2

    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def normalise(small_rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 RGB at input size -> float32 (x/255 - mean) / std, per channel."""
    x = small_rgb.astype(np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess(
    image_rgb: np.ndarray, height: int, width: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """uint8 RGB HxWx3 at any size -> float32 height x width x 3, normalised as in training."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {image_rgb.shape}")
    return normalise(resize_down(image_rgb, height, width), mean, std)


def upsample_proba(prob_small: np.ndarray, orig_h: int, orig_w: int) -> np.ndarray:
    """Probability map at input size -> float32 orig_h x orig_w in [0, 1] (INTER_CUBIC, then clipped)."""
    import cv2

    prob = np.asarray(prob_small, np.float32)
    if prob.ndim == 3:
        prob = prob[..., 0]
    if prob.shape != (orig_h, orig_w):
        prob = cv2.resize(prob, (orig_w, orig_h), interpolation=cv2.INTER_CUBIC)
    return np.clip(prob, 0.0, 1.0, out=prob)


def to_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities -> uint8 mask, 255 where prob >= threshold (the seed's rule), else 0."""
    return np.where(prob >= threshold, np.uint8(255), np.uint8(0))


def to_cutout(image_rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB shot + uint8 alpha (a mask, or a soft one) -> RGBA cutout, the retoucher's deliverable: the shot's
    colour where alpha > 0 and none where it is 0, as in the studio's own cutouts. A compositor never shows
    a transparent pixel's colour, and without the backdrop there a 1152x1728 cutout's PNG is about 5x
    smaller and 3x faster to make and encode (36 against 107 ms, the largest part of `/cutout`; README)."""
    import cv2

    if image_rgb.shape[:2] != alpha.shape[:2]:
        raise ValueError(f"image {image_rgb.shape[:2]} and mask {alpha.shape[:2]} differ in size")
    alpha = np.ascontiguousarray(alpha, np.uint8)
    rgb = np.ascontiguousarray(image_rgb[..., :3])
    shown = cv2.bitwise_and(rgb, rgb, mask=alpha)  # OpenCV: 2.5 ms at 1152x1728, numpy's dstack alone 12
    return cv2.merge([*cv2.split(shown), alpha])


def cutout_alpha(prob: np.ndarray, threshold: float, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """The cutout's uint8 alpha: the mask (255 where prob >= threshold), or with mode soft the same outline
    anti-aliased. Soft: on the pixels beside the outline (a 3x3 neighbour across the threshold) alpha is
    0.5 + (prob - threshold) / |grad prob|, a one-pixel ramp centred on the threshold's sub-pixel contour,
    kept on the mask's side of 128 so alpha >= 128 is exactly the mask; everywhere else it is the mask.
    `mask`: to_mask(prob, threshold) when the caller has it already."""
    import cv2

    mask = to_mask(prob, threshold) if mask is None else mask
    if mode == "binary":
        return mask
    if mode != "soft":
        raise ValueError(f"serving.alpha={mode!r} is not one of {', '.join(ALPHA_MODES)}")
    prob = np.asarray(prob, np.float32)
    h, w = prob.shape
    beside = cv2.findNonZero(cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)))
    if beside is None:  # no outline: nothing to anti-alias
        return mask
    xs, ys = beside.reshape(-1, 2).T
    gx = prob[ys, np.minimum(xs + 1, w - 1)] - prob[ys, np.maximum(xs - 1, 0)]
    gy = prob[np.minimum(ys + 1, h - 1), xs] - prob[np.maximum(ys - 1, 0), xs]
    slope = np.maximum(0.5 * np.hypot(gx, gy), 1e-6)
    ramp = np.rint(255.0 * np.clip(0.5 + (prob[ys, xs] - threshold) / slope, 0.0, 1.0))
    on = mask[ys, xs] > 0
    alpha = mask.copy()
    alpha[ys, xs] = np.where(on, np.maximum(ramp, 128), np.minimum(ramp, 127)).astype(np.uint8)
    return alpha


def edge_length(mask: np.ndarray) -> int:
    """Number of mask pixels with a 4-neighbour outside the mask (the inner contour, in pixels)."""
    import cv2

    binary = (mask > 0).astype(np.uint8)
    eroded = cv2.erode(binary, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return int(binary.sum() - eroded.sum())


def manual_cutout_score(prob: np.ndarray, threshold: float = 0.5) -> float:
    """How much a person should look at this cutout: the width of the model's band of doubt along the edge.

    Score = (pixels with 0.1 < p < 0.9) / (length of the predicted mask's outline), i.e. the mean width in
    pixels of the uncertain band, in per-mille of the image diagonal. Why this shape:
    - a confident mask is uncertain only in a thin band along its outline (the cubic upsampling blurs every
      edge by about the resize factor), so a raw uncertain-pixel count would grow with outline length and
      punish lace, fringes and long hems that the model gets right; dividing by the outline cancels that;
    - doubt away from the outline (holes burnt into patterns, low-contrast regions, a shin taken for a
      skirt: the seed's outliers) widens the band and raises the score;
    - the outline credited is capped at OUTLINE_CAP x the perimeter of a disc of the same area, so a
      speckled or fragmented mask (whose outline explodes) cannot dilute its own doubt;
    - dividing by the diagonal makes the score independent of the shot's resolution, so one threshold,
      chosen on validation, serves studio and CCP images alike.
    A (nearly) empty mask scores EMPTY_MASK_SCORE: a studio shot always contains a garment.
    """
    prob = np.asarray(prob, np.float32)
    mask = prob >= threshold
    area = int(np.count_nonzero(mask))
    if area < EMPTY_MASK_SHARE * mask.size:
        return EMPTY_MASK_SCORE
    uncertain = int(np.count_nonzero((prob > UNCERTAIN_LOW) & (prob < UNCERTAIN_HIGH)))
    outline = min(edge_length(mask), OUTLINE_CAP * 2.0 * np.sqrt(np.pi * area))
    band_px = uncertain / max(outline, 1.0)
    diagonal = float(np.hypot(*prob.shape[:2]))
    return float(min(1000.0 * band_px / diagonal, EMPTY_MASK_SCORE))


@dataclass(frozen=True)
class Maps:
    """One shot's probabilities. `prob`: grown to the shot's size and refined, what the mask and the cutout
    are made of. `small`: the model's own map at its input size, before any refinement; the Dice estimate
    reads it where the profile says so (review.estimate_map), because the refinement sharpens away the doubt
    along the edge that the estimate's features measure (docs/real-photos.md#the-review-estimate)."""

    small: np.ndarray
    prob: np.ndarray


@dataclass
class CutoutModel:
    """A trained U-Net with everything needed to use it exactly as it was trained and tuned."""

    keras_model: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    threshold: float = 0.5
    input_height: int = 192
    input_width: int = 128
    flag_threshold: float = EMPTY_MASK_SCORE
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    flip_tta: bool = False
    batch_size: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    quality: QualityEstimate | None = None
    refinement: Refinement = field(default_factory=Refinement)

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        return preprocess(image_rgb, self.input_height, self.input_width, self.mean, self.std)

    def predict_small(self, batch: np.ndarray) -> np.ndarray:
        """Bare batched forward pass: N x H x W x 3 normalised float32 -> N x H x W float32 probabilities."""
        batch = np.asarray(batch, np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (self.input_height, self.input_width, 3):
            raise ValueError(
                f"expected N x {self.input_height} x {self.input_width} x 3, got {tuple(batch.shape)}"
            )
        out = self.keras_model.predict_on_batch(batch)
        return np.asarray(out, np.float32)[..., 0]

    def predict_small_tta(self, batch: np.ndarray, flip: bool | None = None) -> np.ndarray:
        """predict_small, averaged with the mirrored prediction when flip TTA is on."""
        flip = self.flip_tta if flip is None else flip
        prob = self.predict_small(batch)
        if flip:
            mirrored = self.predict_small(np.ascontiguousarray(batch[:, :, ::-1, :]))
            prob = 0.5 * (prob + mirrored[:, :, ::-1])
        return prob

    def predict_own_maps(self, images: Sequence[np.ndarray], flip: bool | None = None) -> list[np.ndarray]:
        """RGB uint8 shots of any size -> the model's own map of each, at its input size, batch_size at a time.
        Refinement-free, so models differing only in refinement can share it (evaluation.choose_refinement)."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(img) for img in images[start : start + self.batch_size]])
            out.extend(self.predict_small_tta(batch, flip))
        return out

    def predict_maps(self, images: Sequence[np.ndarray], flip: bool | None = None) -> list[Maps]:
        """RGB uint8 shots of any size -> each shot's Maps: the model's own and the full-resolution one."""
        own = self.predict_own_maps(images, flip)
        return [self.maps(p, img) for p, img in zip(own, images, strict=True)]

    def predict_proba(self, images: Sequence[np.ndarray], flip: bool | None = None) -> list[np.ndarray]:
        """RGB uint8 shots of any size -> float32 probability maps at each shot's original size."""
        return [m.prob for m in self.predict_maps(images, flip)]

    def maps(self, prob_small: np.ndarray, image_rgb: np.ndarray) -> Maps:
        """The shot's Maps from the model's map at input size (the batched service path's forward pass)."""
        return Maps(small=prob_small, prob=self.full_resolution(prob_small, image_rgb))

    def full_resolution(self, prob_small: np.ndarray, image_rgb: np.ndarray) -> np.ndarray:
        """A probability map at input size -> the shot's size (INTER_CUBIC), refined on the shot."""
        prob = upsample_proba(prob_small, image_rgb.shape[0], image_rgb.shape[1])
        return refine_proba(prob, image_rgb, self.refinement)

    def predict_masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [to_mask(p, self.threshold) for p in self.predict_proba(images)]

    def needs_manual_cutout(self, prob: np.ndarray) -> tuple[float, bool]:
        """(score, flagged) for one full-resolution probability map."""
        score = manual_cutout_score(prob, self.threshold)
        return score, score >= self.flag_threshold

    def review(self, maps: Maps) -> tuple[float, bool]:
        """(Dice estimate, needs review) of one shot's cutout, read on the map its estimate was calibrated on.
        A model logged without a usable estimate has none: NaN, and the needs-manual-cutout flag decides."""
        if self.quality is None:
            return float("nan"), self.needs_manual_cutout(maps.prob)[1]
        estimate = self.quality.estimate(self.quality.map_of(maps), self.threshold)
        return estimate, self.quality.needs_review(estimate)

    def preprocessing_metadata(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "threshold": float(self.threshold),
            "flag_threshold": float(self.flag_threshold),
            "input_height": int(self.input_height),
            "input_width": int(self.input_width),
            "resize_down": "INTER_AREA",
            "resize_up": "INTER_CUBIC",
            "scale": "x / 255 then (x - mean) / std, RGB order",
            **self.extra,
            REFINE_KEY: self.refinement.to_dict(),
            **({QUALITY_KEY: self.quality.to_dict()} if self.quality else {}),
        }


PRECISIONS = ("float32", "bfloat16")


def in_precision(model: CutoutModel, precision: str) -> CutoutModel:
    """The same model computing in `precision`: for bfloat16 every layer but the input and the float32
    classifier ("mask") is rebuilt under keras' mixed_bfloat16 policy with the same weights, so the
    probabilities still come out in float32. float32 returns the model itself."""
    if precision not in PRECISIONS:
        raise ValueError(f"serving.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return model
    import dataclasses

    import keras

    config = model.keras_model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] != "InputLayer" and layer["config"].get("name") != "mask":
            layer["config"]["dtype"] = "mixed_bfloat16"
    twin = keras.Model.from_config(config)
    twin.set_weights(model.keras_model.get_weights())
    return dataclasses.replace(model, keras_model=twin)


def inference_copy(keras_model: Any) -> Any:
    """The same layers and weights without optimizer or loss, so loading needs no custom objects."""
    import keras

    return keras.Model(keras_model.inputs, keras_model.outputs, name=keras_model.name)


def log_cutout_model(
    keras_model: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    threshold: float,
    flag_threshold: float,
    input_height: int,
    input_width: int,
    name: str = "model",
    extra: dict[str, Any] | None = None,
    quality: QualityEstimate | None = None,
    refinement: Refinement | None = None,
) -> str:
    """Log the U-Net (mlflow.tensorflow flavor, loads as Keras and as pyfunc) into the active run.

    The preprocessing contract (mean, std, threshold, flag threshold, input size, the edge refinement, the
    calibrated quality estimate when given) is stored twice inside the logged model: as MLmodel `metadata["garmentseg"]` and as `extra_files/preprocessing.json`.
    Returns the logged model's URI (models:/m-<id>), which mlflow.register_model accepts.
    """
    import tempfile

    import mlflow
    import mlflow.tensorflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    meta = CutoutModel(
        keras_model,
        tuple(mean),
        tuple(std),
        threshold,
        input_height,
        input_width,
        flag_threshold,
        extra=dict(extra or {}),
        quality=quality,
        refinement=refinement or Refinement(),
    ).preprocessing_metadata()
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, input_height, input_width, 3), "image")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, input_height, input_width, 1), "mask")]),
    )
    example = None
    if input_height * input_width <= MAX_EXAMPLE_PIXELS:
        # A mid-grey shot, normalised as serving would: a valid request body for the pyfunc endpoint.
        grey = np.full((input_height, input_width, 3), 128, np.uint8)
        example = normalise(grey, mean, std)[None]
    else:
        log.info("input %dx%d too large for a JSON input example; signature only", input_height, input_width)
    with tempfile.TemporaryDirectory() as tmp:
        meta_file = Path(tmp) / PREPROCESSING_FILE
        meta_file.write_text(json.dumps(meta, indent=2))
        info = mlflow.tensorflow.log_model(
            inference_copy(keras_model),
            name=name,
            signature=signature,
            input_example=example,
            metadata={METADATA_KEY: meta},
            extra_files=[str(meta_file)],
            pip_requirements=serving_requirements(),
        )
    log.info(
        "logged model %s (threshold %.2f, input %dx%d)", info.model_uri, threshold, input_height, input_width
    )
    return info.model_uri


def serving_requirements() -> list[str]:
    """The logged model's pip requirements, pinned to this environment: the ones MLflow would infer.

    Given explicitly because MLflow's inference loads the model in a subprocess to watch its imports: 20 s
    of every training run on 2 cores, for the same list (mlflow, which MLflow adds itself, tensorflow,
    cloudpickle, numpy).
    """
    import mlflow.tensorflow

    return [
        *mlflow.tensorflow.get_default_pip_requirements(include_cloudpickle=True),
        f"numpy=={np.__version__}",
    ]


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>.+))?$")


def resolve_registered(model_uri: str, tracking_uri: str | None = None) -> tuple[str | None, str | None]:
    """(registered name, version) for models:/name@alias and models:/name/version URIs, else (None, None)."""
    match = _MODELS_URI.match(model_uri)
    if not match or not (match["version"] or match["alias"]):
        return None, None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    name = match["name"]
    if match["alias"]:
        return name, str(client.get_model_version_by_alias(name, match["alias"]).version)
    version = match["version"]
    if version.lower() == "latest":
        versions = client.search_model_versions(f"name = '{name}'")
        return name, str(max(int(v.version) for v in versions)) if versions else None
    return name, version


_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[^/]+)/")


def source_run(model_uri: str, tracking_uri: str | None = None) -> str | None:
    """The run that logged the model at `model_uri`: a registered version's, a logged model's
    (models:/m-<id>), or the run a runs:/ URI names; None for a folder."""
    if match := _RUNS_URI.match(model_uri):
        return match["run_id"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    name, version = resolve_registered(model_uri, tracking_uri)
    if name and version:
        return client.get_model_version(name, version).run_id
    match = _MODELS_URI.match(model_uri)
    if match and not (match["version"] or match["alias"]) and match["name"].startswith("m-"):
        return client.get_logged_model(match["name"]).source_run_id
    return None


def _read_metadata(model_uri: str) -> dict[str, Any]:
    from mlflow.models import Model

    mlmodel = Model.load(model_uri)
    meta = (mlmodel.metadata or {}).get(METADATA_KEY)
    if meta is None:
        raise ValueError(
            f"{model_uri}: MLmodel has no metadata[{METADATA_KEY!r}] (mean/std/threshold); "
            "log it with garmentseg.inference.log_cutout_model"
        )
    return meta


def read_quality_estimate(meta: dict[str, Any], model_uri: str) -> QualityEstimate | None:
    """The model's Dice estimate; None (with a warning) when it has none or one this code cannot read, so an
    older champion still serves, its review decided by the needs-manual-cutout flag."""
    from garmentseg.review.estimate import QualityEstimate

    if QUALITY_KEY not in meta:
        return None
    try:
        return QualityEstimate.from_dict(meta[QUALITY_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("%s: its quality estimate is not used (%s); re-train to calibrate one", model_uri, exc)
        return None


def import_model_libraries() -> None:
    """Import what `load_cutout_model` needs (TensorFlow, Keras, MLflow's flavour): about 15 s on 2 cores.

    A service calls it before its first load, so one started before its alias exists (a fresh platform, a
    canary waiting for the first challenger) pays that while it waits, and serves seconds after the move.
    """
    import keras  # noqa: F401
    import mlflow.tensorflow  # noqa: F401
    import tensorflow  # noqa: F401


def load_cutout_model(model_uri: str, tracking_uri: str | None = None) -> CutoutModel:
    """Load a logged U-Net and its preprocessing from runs:/, models:/name@alias, models:/name/version,
    models:/m-<id> or a local MLflow model folder."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    local = Path(model_uri)
    uri = (
        str(local.resolve())
        if "://" not in model_uri and ":/" not in model_uri and local.exists()
        else model_uri
    )
    name, version = resolve_registered(uri, tracking_uri)
    meta = _read_metadata(uri)  # a URI that names no model fails here, before TensorFlow's seconds of import
    import mlflow.tensorflow

    keras_model = mlflow.tensorflow.load_model(uri)
    known = {
        "mean",
        "std",
        "threshold",
        "flag_threshold",
        "input_height",
        "input_width",
        QUALITY_KEY,
        REFINE_KEY,
    }
    extra = {k: v for k, v in meta.items() if k not in known | {"resize_down", "resize_up", "scale"}}
    model = CutoutModel(
        keras_model=keras_model,
        mean=tuple(float(v) for v in meta["mean"]),
        std=tuple(float(v) for v in meta["std"]),
        threshold=float(meta["threshold"]),
        input_height=int(meta["input_height"]),
        input_width=int(meta["input_width"]),
        flag_threshold=float(meta["flag_threshold"]),
        model_name=name,
        model_version=version,
        model_uri=model_uri,
        extra=extra,
        quality=read_quality_estimate(meta, model_uri),
        refinement=Refinement.from_dict(meta.get(REFINE_KEY)),
    )
    log.info(
        "loaded %s (%s v%s): input %dx%d, threshold %.2f, refine %s",
        model_uri,
        name or "unregistered",
        version or "-",
        model.input_height,
        model.input_width,
        model.threshold,
        model.refinement.method,
    )
    return model

"""Which features make the review estimate catch cutouts below target: AUROC of each candidate feature set,
fitted on the training dataset's valid split exactly as `review.estimate.calibrate` fits, and scored on
cutouts the model never saw; one run, one model, one feature extraction.

    uv run python benchmarks/bench_review_features.py --profile real --model-uri URI \
        --dataset var/real/train --scored var/real/holdout [--scored-split all] [--json OUT]

The candidates beside today's FEATURES: the same features read on the probability before the guided
refinement (which sharpens the map toward the shot's edges and so hides the model's doubt), the
disagreement with the mirrored shot's prediction, how well the predicted edge sits on an image edge, and
how separable the colours either side of the edge are, and the predicted mask's shape (convexity, holes,
extent: a bag cut out with the clothes is a confident mistake the map's doubt cannot show), and the shot's
novelty: how far its image lies from the training split's in the model's own bottleneck (mean cosine
distance to its NOVELTY_NEIGHBOURS nearest training shots), for confident mistakes on photos unlike those
the model learnt from. Features are cached per model and folder (--cache), so feature sets can be compared
again without predicting.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _report import emit  # noqa: E402


def image_side(image: np.ndarray, mask: np.ndarray, height: int, width: int) -> dict[str, float]:
    """Edge alignment and colour separation of a predicted mask, read on the shot shrunk to height x width."""
    import cv2

    from garmentseg.validation.content import edge_alignment

    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) >= 0.5
    aligned = edge_alignment(small[..., ::-1], m, 2)
    radius = max(2, round(0.02 * math.hypot(height, width)))
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    m8 = m.astype(np.uint8)
    band = (cv2.dilate(m8, kernel) - cv2.erode(m8, kernel)).astype(bool)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64)
    inside, outside = lab[band & m], lab[band & ~m]
    if len(inside) < 10 or len(outside) < 10:
        return {"edge_alignment": aligned or 0.0, "colour_separation": 0.0, "colour_agreement": 0.5}
    pooled = np.cov(np.vstack([inside - inside.mean(0), outside - outside.mean(0)]).T) + 1e-3 * np.eye(3)
    direction = np.linalg.solve(pooled, inside.mean(0) - outside.mean(0))
    separation = float((inside.mean(0) - outside.mean(0)) @ direction)
    cut = 0.5 * (inside.mean(0) + outside.mean(0)) @ direction
    agreement = 0.5 * (np.mean(inside @ direction > cut) + np.mean(outside @ direction <= cut))
    return {
        "edge_alignment": aligned if aligned is not None else 0.0,
        "colour_separation": math.log1p(separation),
        "colour_agreement": float(agreement),
    }


def mask_shape(mask: np.ndarray) -> dict[str, float]:
    """How garment-like the predicted mask's shape is, read at the model's size: a bag or a second person
    cut out with the clothes makes it less convex and taller or wider than a body's clothes."""
    import cv2

    binary = mask.astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return {"solidity": 0.0, "hole_share": 0.0, "height_share": 0.0, "width_share": 0.0}
    hull = cv2.convexHull(np.vstack(contours))
    area = float(binary.sum())
    filled = np.zeros_like(binary)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    ys, xs = np.nonzero(binary)
    return {
        "solidity": area / max(cv2.contourArea(hull), 1.0),
        "hole_share": float(filled.sum() - area) / max(area, 1.0),
        "height_share": float(ys.max() - ys.min() + 1) / binary.shape[0],
        "width_share": float(xs.max() - xs.min() + 1) / binary.shape[1],
    }


NOVELTY_NEIGHBOURS = 5
# The ridge strengths compared on the shipped features: fixed ones, and the choice by leave-one-out on valid.
RIDGE_STRENGTHS = {
    **{f"alpha {a:g}": (a,) for a in (0.1, 1.0, 10.0, 100.0, 1000.0)},
    "leave-one-out among 0.1-1000": tuple(np.logspace(-1, 3, 9)),
}
CACHE_VERSION = 2  # in the cache's file names; bumped when extract() returns another field (2: embedding)


def bottleneck(model):
    """A keras model from the shot to its mean feature vector at the network's coarsest layer (the smallest
    spatial output, its deepest layer there): what the model sees of the image, not of the mask."""
    import keras

    network = model.keras_model
    spatial = [layer for layer in network.layers if len(layer.output.shape) == 4]
    area = min(layer.output.shape[1] * layer.output.shape[2] for layer in spatial)
    coarsest = [layer for layer in spatial if layer.output.shape[1] * layer.output.shape[2] == area][-1]
    pooled = keras.layers.GlobalAveragePooling2D()(coarsest.output)
    return keras.Model(network.inputs, pooled)


def embed(encoder, batch: np.ndarray) -> np.ndarray:
    """One preprocessed shot (a batch of one) -> its unit-length bottleneck vector."""
    vector = np.asarray(encoder.predict_on_batch(batch), np.float64)[0]
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def training_embeddings(model, frame, root: Path, cfg) -> np.ndarray:
    """embed() of every training shot of `frame`, read as evaluation reads them: novelty's reference."""
    from garmentseg.evaluation import _rows
    from garmentseg.prepare import read_pair

    encoder = bottleneck(model)
    vectors = []
    for i, (_, row) in enumerate(_rows(frame, "train").iterrows()):
        image, _ = read_pair(root, row, cfg.validation.max_pixels)
        vectors.append(embed(encoder, model.preprocess(image)[None]))
        print(f"train embeddings: {i + 1}", file=sys.stderr, flush=True)
    return np.asarray(vectors)


def novelty(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean cosine distance of each vector to its NOVELTY_NEIGHBOURS nearest reference vectors."""
    distance = 1.0 - vectors @ reference.T
    return np.sort(distance, axis=1)[:, :NOVELTY_NEIGHBOURS].mean(axis=1)


def extract(model, frame, root: Path, cfg, split: str) -> dict[str, np.ndarray]:
    """Per cutout: its Dice, today's features on the refined and the unrefined map (at the shot's size and at
    the model's), and the candidates."""
    from garmentseg.edges import refine_proba
    from garmentseg.evaluation import _rows
    from garmentseg.inference import upsample_proba
    from garmentseg.model import metrics as M
    from garmentseg.prepare import read_pair
    from garmentseg.review import estimate as Q

    part = _rows(frame, split)
    rows: dict[str, list] = {
        "dice": [],
        "refined": [],
        "unrefined": [],
        "small": [],
        "refined_small": [],
        "candidates": [],
        "embedding": [],
    }
    t = model.threshold
    encoder = bottleneck(model)
    for i, (_, row) in enumerate(part.iterrows()):
        image, truth = read_pair(root, row, cfg.validation.max_pixels)
        batch = model.preprocess(image)[None]
        small = model.predict_small(batch)[0]
        mirrored = model.predict_small(np.ascontiguousarray(batch[:, :, ::-1, :]))[0, :, ::-1]
        rows["embedding"].append(embed(encoder, batch))
        served = 0.5 * (small + mirrored) if cfg.evaluation.flip_tta else small
        unrefined = upsample_proba(served, *image.shape[:2])
        refined = refine_proba(unrefined.copy(), image, model.refinement)
        mask = refined >= t
        rows["dice"].append(M.dice(mask, truth))
        rows["refined"].append(Q.quality_features(refined, t, refined.shape))
        rows["unrefined"].append(Q.quality_features(unrefined, t, unrefined.shape))
        rows["small"].append(Q.quality_features(served, t, served.shape))
        rows["refined_small"].append(Q.quality_features(refined, t, served.shape))  # the shipped shrink
        sides = image_side(image, mask, 2 * model.input_height, 2 * model.input_width)
        shape = mask_shape(served >= t)
        rows["candidates"].append(
            [
                1.0 - M.dice(small >= t, mirrored >= t),
                float(np.count_nonzero(mask != (unrefined >= t)) / max(1, np.count_nonzero(mask))),
                sides["edge_alignment"],
                sides["colour_separation"],
                sides["colour_agreement"],
                *(shape[k] for k in SHAPE),
            ]
        )
        print(f"{split}: {i + 1}/{len(part)}", file=sys.stderr, flush=True)
    usable = [
        i
        for i, a in enumerate(
            zip(rows["refined"], rows["unrefined"], rows["small"], rows["refined_small"], strict=True)
        )
        if all(f is not None for f in a)
    ]
    return {
        "embedding": np.asarray(rows["embedding"])[usable],
        "dice": np.asarray(rows["dice"])[usable],
        "refined": np.stack([rows["refined"][i] for i in usable]),
        "unrefined": np.stack([rows["unrefined"][i] for i in usable]),
        "small": np.stack([rows["small"][i] for i in usable]),
        "refined_small": np.stack([rows["refined_small"][i] for i in usable]),
        "candidates": np.asarray(rows["candidates"])[usable],
    }


SHAPE = ("solidity", "hole_share", "height_share", "width_share")
CANDIDATES = (
    "flip_disagreement",
    "refine_shift",
    "edge_alignment",
    "colour_separation",
    "colour_agreement",
    *SHAPE,
)
IMAGE_SIDE = CANDIDATES[1:5]


def columns(data: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    from garmentseg.review.estimate import FEATURES

    picked = []
    for name in names:
        source, _, feature = name.partition(":")
        if source == "candidate" and feature == "novelty":
            picked.append(data["novelty"])
        elif source == "candidate":
            picked.append(data["candidates"][:, CANDIDATES.index(feature)])
        else:
            picked.append(data[source][:, FEATURES.index(feature)])
    return np.stack(picked, axis=1)


def fit_and_score(valid, scored, names, cfg, alphas=None) -> dict[str, float]:
    """`calibrate` on valid with these features; AUROC of its estimates on scored, and a pooled 5-fold CV
    AUROC of the same ridge over valid + scored (the steadier figure). `alphas`: the ridge strengths to
    choose among (default: the shipped ones)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from garmentseg.review import estimate as Q

    alphas = Q.RIDGE_ALPHAS if alphas is None else alphas
    target = cfg.review.target_dice
    x_valid, x_scored = columns(valid, names), columns(scored, names)
    quality = Q.calibrate(list(x_valid), list(valid["dice"]), cfg.review, (0, 0), alphas)
    estimates = np.array([quality.from_features(x) for x in x_scored])
    pooled_x = np.vstack([x_valid, x_scored])
    pooled_d = np.concatenate([valid["dice"], scored["dice"]])
    z = (pooled_x - pooled_x.mean(0)) / np.where(pooled_x.std(0) == 0, 1, pooled_x.std(0))
    below = pooled_d < target
    cv = cross_val_predict(
        Q.ridge_regression(alphas),
        z,
        np.log(1 - pooled_d + Q.ERROR_FLOOR),
        cv=StratifiedKFold(5, shuffle=True, random_state=0).split(z, below),
    )
    return {
        "scored_auroc": round(Q.auroc(-estimates, scored["dice"] < target), 4),
        "pooled_cv_auroc": round(Q.auroc(cv, below), 4),
        "scored_recall_at_1.3x": round(recall_at_budget(estimates, scored["dice"] < target, 1.3), 4),
        "alpha_on_valid": quality.ridge_alpha,
    }


def recall_at_budget(estimates: np.ndarray, below: np.ndarray, ratio: float) -> float:
    """The share of cutouts below target caught by reviewing the `ratio` x (their share) worst estimates:
    issue #17's budget aim read on the ranking alone, whatever threshold the policy set."""
    reviewed = np.argsort(estimates, kind="stable")[: math.ceil(ratio * below.sum())]
    return float(below[reviewed].sum() / max(below.sum(), 1))


def at_policy(data: dict[str, dict[str, np.ndarray]], source: str, cfg, alphas=None) -> dict[str, float]:
    """The shipped path on one kind of map: `calibrate` on valid (its policy threshold included), then
    `review_metrics` on the scored cutouts."""
    from garmentseg.review import estimate as Q

    alphas = Q.RIDGE_ALPHAS if alphas is None else alphas
    valid, scored = data["valid"], data["scored"]
    quality = Q.calibrate(list(valid[source]), list(valid["dice"]), cfg.review, (0, 0), alphas)
    estimates = [quality.from_features(f) for f in scored[source]]
    figures = Q.review_metrics(estimates, scored["dice"], quality)
    figures["reviewed_over_below"] = figures["review_share"] / max(figures["below_target_share"], 1e-9)
    return {k: round(v, 4) for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="real")
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="the training dataset (its valid split)")
    parser.add_argument("--scored", type=Path, required=True, help="cutouts the model never saw")
    parser.add_argument("--scored-split", default="all")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "review-features")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from garmentseg.config import load_config
    from garmentseg.data.index import load_dataset
    from garmentseg.inference import load_cutout_model
    from garmentseg.review.estimate import FEATURES, auroc

    cfg = load_config(args.profile, None)
    key = args.model_uri.replace(":", "_").replace("/", "_")
    model = None
    data = {}
    for name, folder, split in (("valid", args.dataset, "valid"), ("scored", args.scored, args.scored_split)):
        cached = args.cache / f"{key}-{folder.name}-{split}-v{CACHE_VERSION}.npz"
        if not cached.is_file():
            model = model or load_cutout_model(args.model_uri, cfg.tracking_uri)
            frame, root = load_dataset(cfg, folder)
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, **extract(model, frame, root, cfg, split))
        data[name] = dict(np.load(cached))
    reference = args.cache / f"{key}-{args.dataset.name}-train-embeddings.npy"
    if not reference.is_file():
        model = model or load_cutout_model(args.model_uri, cfg.tracking_uri)
        frame, root = load_dataset(cfg, args.dataset)
        np.save(reference, training_embeddings(model, frame, root, cfg))
    for part in data.values():
        part["novelty"] = novelty(part["embedding"], np.load(reference))
    target = cfg.review.target_dice
    today = [f"refined:{f}" for f in FEATURES]
    unrefined = [f"unrefined:{f}" for f in FEATURES]
    shrunk = [f"refined_small:{f}" for f in FEATURES]
    sets = {
        "today (refined map)": today,
        "unrefined map": unrefined,
        "model-size map": [f"small:{f}" for f in FEATURES],
        "refined map shrunk to model size": shrunk,
        "model-size map + flip": [*(f"small:{f}" for f in FEATURES), "candidate:flip_disagreement"],
        "unrefined + flip": [*unrefined, "candidate:flip_disagreement"],
        "unrefined + image side": [*unrefined, *(f"candidate:{c}" for c in IMAGE_SIDE)],
        "unrefined + all candidates": [*unrefined, *(f"candidate:{c}" for c in CANDIDATES)],
        "today + all candidates": [*today, *(f"candidate:{c}" for c in CANDIDATES)],
        "shrunk + flip": [*shrunk, "candidate:flip_disagreement"],
        "shrunk + image side": [*shrunk, *(f"candidate:{c}" for c in IMAGE_SIDE)],
        "shrunk + all candidates": [*shrunk, *(f"candidate:{c}" for c in CANDIDATES)],
        "model-size map + refine shift": [*(f"small:{f}" for f in FEATURES), "candidate:refine_shift"],
        "model-size map + mask shape": [
            *(f"small:{f}" for f in FEATURES),
            *(f"candidate:{c}" for c in SHAPE),
        ],
        "shrunk + mask shape": [*shrunk, *(f"candidate:{c}" for c in SHAPE)],
        "model-size map + novelty": [*(f"small:{f}" for f in FEATURES), "candidate:novelty"],
        "shrunk + novelty": [*shrunk, "candidate:novelty"],
    }
    shipped_map = "small" if cfg.review.estimate_map == "model" else "refined_small"
    shipped = [f"{shipped_map}:{f}" for f in FEATURES]
    policy = {
        source: at_policy(data, source, cfg) for source in ("refined", "unrefined", "small", "refined_small")
    }
    singles = {}
    for name in [
        *today,
        *unrefined,
        *(f"small:{f}" for f in FEATURES),
        *(f"refined_small:{f}" for f in FEATURES),
        *(f"candidate:{c}" for c in (*CANDIDATES, "novelty")),
    ]:
        below = data["scored"]["dice"] < target
        value = columns(data["scored"], [name])[:, 0]
        singles[name] = round(max(auroc(value, below), auroc(-value, below)), 4)
    emit(
        {
            "model_uri": args.model_uri,
            "target_dice": target,
            "valid": {"n": len(data["valid"]["dice"]), "below": int((data["valid"]["dice"] < target).sum())},
            "scored": {
                "n": len(data["scored"]["dice"]),
                "below": int((data["scored"]["dice"] < target).sum()),
            },
            "feature_sets": {
                k: fit_and_score(data["valid"], data["scored"], v, cfg) for k, v in sets.items()
            },
            "at_the_policy": policy,
            "ridge_strength_on_the_shipped_features": {
                label: fit_and_score(data["valid"], data["scored"], shipped, cfg, alphas)
                for label, alphas in RIDGE_STRENGTHS.items()
            },
            "single_feature_auroc_either_sign": singles,
        },
        args.json,
    )


if __name__ == "__main__":
    main()

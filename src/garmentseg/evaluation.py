"""Full-resolution evaluation through the inference code path (the model's edge refinement included):
threshold tuning on validation, per-image Dice / IoU / boundary scores / halo on test, the seed's summaries (median headline, outlier-corrected mean and
median), slices by view and difficulty tag (the registry gate reads its view slices from here), the
needs-manual-cutout flag, and a gallery; `garmentseg evaluate` at the bottom.

Images are streamed a batch at a time; only per-image numbers (and small gallery thumbnails) are kept, so
memory does not grow with the test set.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
import pandas as pd

from garmentseg.cliopts import config_options, dataset_option
from garmentseg.config import load_config
from garmentseg.data.index import load_dataset
from garmentseg.edges import Refinement, describe, refinement_candidates
from garmentseg.inference import CutoutModel, Maps, load_cutout_model, manual_cutout_score, to_mask
from garmentseg.model import metrics as M
from garmentseg.prepare import read_pair
from garmentseg.review import estimate as Q

if TYPE_CHECKING:
    from garmentseg.config import Config

log = logging.getLogger(__name__)

META_COLUMNS = ("garment_id", "view", "split", "garment_type", "difficulty", "batch_id", "raw_path")
GALLERY_HEIGHT = 432  # thumbnail height of each gallery panel (a quarter of the studio's 1728)
OVERLAY_GREEN = np.array([0, 255, 0], np.float32)


@dataclass
class ThresholdChoice:
    threshold: float
    flag_threshold: float
    valid_summary: dict[str, Any]
    dice_median_by_threshold: dict[float, float] = field(default_factory=dict)
    quality: Q.QualityEstimate | None = None


@dataclass
class EvalReport:
    summary: dict[str, Any]
    per_image: pd.DataFrame
    gallery: list[tuple[str, dict[str, Any], np.ndarray]] = field(default_factory=list)


def _rows(frame: pd.DataFrame, split: str | None) -> pd.DataFrame:
    if split in (None, "all"):
        return frame.reset_index(drop=True)
    return frame[frame["split"] == split].reset_index(drop=True)


def stream_predictions(
    model: CutoutModel,
    frame: pd.DataFrame,
    root: Path,
    cfg: Config,
    *,
    flip: bool | None = None,
    desc: str = "predict",
) -> Iterator[tuple[pd.Series, np.ndarray, np.ndarray, Maps]]:
    """(row, shot RGB, truth mask, the shot's Maps) per index row, one model batch at a time; `desc` names
    the progress bar."""
    for row, image, truth, (maps,) in stream_candidate_maps([model], frame, root, cfg, flip=flip, desc=desc):
        yield row, image, truth, maps


def stream_candidate_maps(
    models: list[CutoutModel],
    frame: pd.DataFrame,
    root: Path,
    cfg: Config,
    *,
    flip: bool | None = None,
    desc: str = "predict",
) -> Iterator[tuple[pd.Series, np.ndarray, np.ndarray, list[Maps]]]:
    """stream_predictions for models that differ only in their refinement: (row, shot, truth, each model's
    Maps). Each batch is read and goes through the network once, however many refinements are tried."""
    from tqdm import tqdm

    flip = cfg.evaluation.flip_tta if flip is None else flip
    network = models[0]
    with tqdm(total=len(frame), desc=desc, unit="shot", disable=None, leave=False) as bar:
        for start in range(0, len(frame), network.batch_size):
            rows = [row for _, row in frame.iloc[start : start + network.batch_size].iterrows()]
            pairs = [read_pair(root, row, cfg.validation.max_pixels) for row in rows]
            own = network.predict_own_maps([image for image, _ in pairs], flip=flip)
            for row, (image, truth), small in zip(rows, pairs, own, strict=True):
                yield row, image, truth, [model.maps(small, image) for model in models]
            bar.update(len(rows))


class _ThresholdSweep:
    """One model's validation shots at every threshold of cfg.evaluation.threshold_grid: their Dice, their
    needs-manual-cutout score and the Dice estimate's features, for tune_threshold's choice."""

    def __init__(self, model: CutoutModel, cfg: Config) -> None:
        self.cfg = cfg
        self.grid = [float(t) for t in cfg.evaluation.threshold_grid]
        self.map_size = (model.input_height, model.input_width)
        self.dice_at: dict[float, list[float]] = {t: [] for t in self.grid}
        self.score_at: dict[float, list[float]] = {t: [] for t in self.grid}
        self.features_at: dict[float, list[np.ndarray | None]] = {t: [] for t in self.grid}

    def add(self, truth: np.ndarray, maps: Maps) -> None:
        prob = maps.prob
        at_map_size = Q.at_size(Q.read_map(maps, self.cfg.review.estimate_map), self.map_size)
        for t in self.grid:
            self.dice_at[t].append(M.dice(prob >= t, truth))
            self.score_at[t].append(manual_cutout_score(prob, t))
            self.features_at[t].append(Q.quality_features(at_map_size, t, self.map_size))

    def choose(self, split: str) -> ThresholdChoice:
        review = self.cfg.review
        best = M.best_threshold(self.dice_at)
        needs_person = [d < review.target_dice for d in self.dice_at[best]]
        flag = M.best_flag_threshold(self.score_at[best], needs_person)
        summary = M.summarise(self.dice_at[best], "dice_")
        try:
            quality = Q.calibrate(self.features_at[best], self.dice_at[best], review, self.map_size)
        except ValueError as exc:
            log.warning("%s: no quality estimate: %s", split, exc)
            quality = None
        log.info(
            "%s: threshold %.2f (median Dice %.4f), flag threshold %.3f, review at estimate <= %s",
            split,
            best,
            summary["dice_median"],
            flag,
            f"{quality.review_below:.4f}" if quality else "-",
        )
        by_threshold = {t: float(np.median(v)) for t, v in self.dice_at.items()}
        return ThresholdChoice(best, flag, summary, by_threshold, quality)


def tune_threshold(
    model: CutoutModel, frame: pd.DataFrame, root: Path, cfg: Config, split: str = "valid"
) -> ThresholdChoice:
    """Pick the mask threshold (best median Dice over cfg.evaluation.threshold_grid), the
    needs-manual-cutout threshold (best F2 at catching Dice < target) and calibrate the Dice estimate with
    its review threshold (cfg.review's policy) on the validation split."""
    part = _rows(frame, split)
    if part.empty:
        log.warning(
            "no %s rows: keeping threshold %.2f and flagging only empty masks", split, model.threshold
        )
        return ThresholdChoice(model.threshold, model.flag_threshold, {})
    sweep = _ThresholdSweep(model, cfg)
    for _, _, truth, maps in stream_predictions(model, part, root, cfg, desc=f"tune threshold on {split}"):
        sweep.add(truth, maps)
    return sweep.choose(split)


@dataclass
class RefinementChoice:
    """The refinement kept for a new model, its threshold choice, and what each candidate scored on valid."""

    refinement: Refinement
    threshold: ThresholdChoice
    candidates: list[dict[str, Any]] = field(default_factory=list)


def choose_refinement(model: CutoutModel, frame: pd.DataFrame, root: Path, cfg: Config) -> RefinementChoice:
    """Tune the threshold (tune_threshold) under each of params.yaml's refinement candidates and keep the one
    with the best validation boundary F, among those whose validation Dice median is within
    `inference.choice_dice_tolerance` of the best. Why on valid: which refinement helps depends on the
    model and the photos (on the studio guided filtering lifts boundary F by 0.09; on street photos it went
    either way by 0.01-0.02, docs/real-photos.md), and choosing on the test split or a holdout would flatter
    the figures reported there. The candidates share the network: valid is read and predicted twice in all
    (to tune, then to score the edges), however many there are. With one candidate it is tune_threshold
    alone."""
    candidates = refinement_candidates(cfg.inference)
    part = _rows(frame, "valid")
    if len(candidates) == 1 or part.empty:
        return RefinementChoice(model.refinement, tune_threshold(model, frame, root, cfg))
    models = [replace(model, refinement=refinement) for refinement in candidates]
    sweeps = [_ThresholdSweep(candidate, cfg) for candidate in models]
    tuning = f"tune {len(models)} refinements on valid"
    for _, _, truth, maps in stream_candidate_maps(models, part, root, cfg, desc=tuning):
        for sweep, candidate_maps in zip(sweeps, maps, strict=True):
            sweep.add(truth, candidate_maps)
    choices = [sweep.choose("valid") for sweep in sweeps]
    # The edge figures at each candidate's own threshold: a second pass, as a threshold is known only now.
    ev = cfg.evaluation
    scores: list[list[dict[str, float]]] = [[] for _ in models]
    for _, _, truth, maps in stream_candidate_maps(models, part, root, cfg, desc="their edges on valid"):
        for scored, choice, candidate_maps in zip(scores, choices, maps, strict=True):
            pred = to_mask(candidate_maps.prob, choice.threshold)
            scored.append(
                M.mask_scores(pred, truth, ev.boundary_fraction, ev.boundary_f_tolerance_px, ev.halo_band_px)
            )
    tried = []
    for refinement, choice, scored in zip(candidates, choices, scores, strict=True):
        row = {
            "refinement": describe(refinement),
            "threshold": choice.threshold,
            **{
                f"valid_{k}_median": float(np.median([s[k] for s in scored]))
                for k in ("dice", "bf_score", "halo")
            },
        }
        tried.append((refinement, choice, row))
    best_dice = max(row["valid_dice_median"] for _, _, row in tried)
    eligible = [
        t for t in tried if t[2]["valid_dice_median"] >= best_dice - cfg.inference.choice_dice_tolerance
    ]
    refinement, choice, row = max(eligible, key=lambda t: t[2]["valid_bf_score_median"])
    for _, _, other in tried:
        other["chosen"] = other is row
        log.info(
            "refinement %(refinement)s on valid: Dice median %(valid_dice_median).4f, boundary F "
            "%(valid_bf_score_median).3f, halo %(valid_halo_median).3f, chosen %(chosen)s",
            other,
        )
    return RefinementChoice(refinement, choice, [row for _, _, row in tried])


def _slices(per_image: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {"view": {}, "difficulty": {}}
    for view, group in per_image.groupby("view", sort=True):
        out["view"][str(view)] = _slice_stats(group)
    tags = per_image.assign(tag=per_image["difficulty"].astype(str).str.split(",")).explode("tag")
    tags["tag"] = tags["tag"].str.strip()
    for tag, group in tags[tags["tag"] != ""].groupby("tag", sort=True):
        out["difficulty"][str(tag)] = _slice_stats(group)
    return out


def _slice_stats(group: pd.DataFrame) -> dict[str, float]:
    """A slice's Dice and IoU, and its edge metrics (boundary F, boundary IoU, halo) as medians."""
    edges = ["bf_score", "halo", *(c for c in group.columns if c.startswith("boundary_iou_"))]
    return {
        "n": len(group),
        "dice_median": float(group["dice"].median()),
        "dice_mean": float(group["dice"].mean()),
        "iou_median": float(group["iou"].median()),
        **{f"{column}_median": float(group[column].median()) for column in edges},
    }


def summarise(per_image: pd.DataFrame, model: CutoutModel, cfg: Config, flip: bool) -> dict[str, Any]:
    """The report's summary: the seed's statistics, boundary scores, flag quality and slices; `flip`: whether
    the predictions were made with flip TTA."""
    ev = cfg.evaluation
    dice = per_image["dice"].to_numpy()
    summary: dict[str, Any] = {
        **M.summarise(dice, "dice_"),
        **{k: v for k, v in M.summarise(per_image["iou"], "iou_").items() if k != "iou_n"},
        **M.outlier_corrected(dice, ev.outlier_iqr_k),
        "outlier_rule": f"Dice < Q1 - {ev.outlier_iqr_k:g} * IQR",
        "bf_score_median": float(per_image["bf_score"].median()),
        "bf_tolerance_px": ev.boundary_f_tolerance_px,
        "halo_median": float(per_image["halo"].median()),
        "halo_band_px": ev.halo_band_px,
        "refine": model.refinement.method,
        "refinement": describe(model.refinement),
        "threshold": float(model.threshold),
        "flag_threshold": float(model.flag_threshold),
        "manual_cutout_target_dice": cfg.review.target_dice,
        "flip_tta": bool(flip),
        "slices": _slices(per_image),
    }
    summary["n"] = summary.pop("dice_n")
    for fraction in ev.boundary_fraction:
        key = M.boundary_iou_key(fraction)
        summary[f"{key}_median"] = float(per_image[key].median())
        summary[f"{key}_mean"] = float(per_image[key].mean())
    summary.update(
        M.flag_precision_recall(per_image["manual_score"], per_image["needs_person"], model.flag_threshold)
    )
    # The needs-manual-cutout score's own ranking (higher = worse), beside the Dice estimate's.
    summary["flag_auroc"] = Q.auroc(
        per_image["manual_score"].to_numpy(), per_image["needs_person"].to_numpy()
    )
    if model.quality is not None:
        summary["review_below"] = model.quality.review_below
        summary["review_policy"] = model.quality.policy
        summary.update(Q.review_metrics(per_image["dice_estimate"], per_image["dice"], model.quality))
    return summary


def evaluate(
    model: CutoutModel,
    frame: pd.DataFrame,
    root: Path,
    cfg: Config,
    split: str | None = "test",
    *,
    flip: bool | None = None,
    gallery: bool = True,
) -> EvalReport:
    """Score every row of `split` ("all"/None for the whole index) at the shot's own resolution."""
    part = _rows(frame, split)
    if part.empty:
        raise ValueError(f"the index has no rows in split {split!r}; nothing to evaluate")
    ev = cfg.evaluation
    flip = ev.flip_tta if flip is None else flip
    records = []
    for row, _, truth, maps in stream_predictions(
        model, part, root, cfg, flip=flip, desc=f"evaluate {split}"
    ):
        prob = maps.prob
        pred = to_mask(prob, model.threshold)
        scores = M.mask_scores(pred, truth, ev.boundary_fraction, ev.boundary_f_tolerance_px, ev.halo_band_px)
        score = manual_cutout_score(prob, model.threshold)
        estimate, needs_review = model.review(maps)
        meta = {c: row[c] for c in META_COLUMNS if c in row.index}
        records.append(
            {
                **meta,
                "height": truth.shape[0],
                "width": truth.shape[1],
                **scores,
                "manual_score": score,
                "flagged": score >= model.flag_threshold,
                "needs_person": scores["dice"] < cfg.review.target_dice,
                "dice_estimate": estimate,
                "needs_review": needs_review,
            }
        )
    per_image = pd.DataFrame.from_records(records)
    for column in ("difficulty", "view"):
        if column not in per_image:
            per_image[column] = "unknown"
    summary = summarise(per_image, model, cfg, flip)
    panels = build_gallery(model, part, per_image, root, cfg, flip=flip) if gallery else []
    log.info(
        "%s: %d images, Dice median %.4f mean %.4f p10 %.4f",
        split or "all",
        summary["n"],
        summary["dice_median"],
        summary["dice_mean"],
        summary["dice_p10"],
    )
    return EvalReport(summary, per_image, panels)


def overlay(image_rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The seed's green overlay of a predicted mask on the shot."""
    out = image_rgb.astype(np.float32)
    on = mask > 0
    out[on] = (1 - alpha) * out[on] + alpha * OVERLAY_GREEN
    return out.astype(np.uint8)


def _panel(image_rgb: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """shot | truth | prediction | overlay, side by side, at GALLERY_HEIGHT."""
    import cv2

    h, w = truth.shape
    width = max(1, round(w * GALLERY_HEIGHT / h))

    def small(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (width, GALLERY_HEIGHT), interpolation=cv2.INTER_AREA)

    grey = [np.repeat((m > 0).astype(np.uint8)[..., None] * 255, 3, axis=2) for m in (truth, pred)]
    return np.hstack([small(image_rgb), small(grey[0]), small(grey[1]), small(overlay(image_rgb, pred))])


def build_gallery(
    model: CutoutModel,
    part: pd.DataFrame,
    per_image: pd.DataFrame,
    root: Path,
    cfg: Config,
    *,
    flip: bool | None = None,
) -> list[tuple[str, dict[str, Any], np.ndarray]]:
    """Re-predict the worst and best cfg.evaluation.gallery_size images and render their panels."""
    k = cfg.evaluation.gallery_size
    if k == 0:
        return []
    order = per_image["dice"].sort_values(kind="stable")
    picks = [("worst", i) for i in order.index[:k]] + [("best", i) for i in order.index[::-1][:k]]
    seen: set[int] = set()
    chosen = [(kind, i) for kind, i in picks if not (i in seen or seen.add(i))]
    rows = part.loc[[i for _, i in chosen]]
    gallery = []
    for (kind, i), (row, image, truth, maps) in zip(
        chosen, stream_predictions(model, rows, root, cfg, flip=flip, desc="gallery"), strict=True
    ):
        info = {
            "garment_id": row["garment_id"],
            "view": row["view"],
            "dice": float(per_image.loc[i, "dice"]),
            "difficulty": str(row.get("difficulty", "unknown")),
        }
        gallery.append((kind, info, _panel(image, truth, to_mask(maps.prob, model.threshold))))
    return gallery


def _dice_histogram(per_image: pd.DataFrame, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(per_image["dice"], bins=30, color="tab:green")
    ax.axvline(summary["dice_median"], color="k", label=f"median {summary['dice_median']:.4f}")
    if np.isfinite(summary.get("outlier_floor", np.nan)):
        ax.axvline(summary["outlier_floor"], color="r", ls="--", label=summary["outlier_rule"])
    ax.set_xlabel("Dice (full resolution)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finite(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (DVC and browsers reject bare NaN)."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """metrics.json, per_image.csv/.parquet, slices.csv, dice_hist.png and gallery/{*.png,index.html}."""
    from garmentseg.imageio import write_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / "metrics.json",
        "per_image_csv": out / "per_image.csv",
        "per_image_parquet": out / "per_image.parquet",
        "slices": out / "slices.csv",
        "histogram": out / "dice_hist.png",
        "gallery": out / "gallery" / "index.html",
    }
    paths["metrics"].write_text(json.dumps(finite(report.summary), indent=2, sort_keys=True))
    report.per_image.to_csv(paths["per_image_csv"], index=False)
    report.per_image.to_parquet(paths["per_image_parquet"], index=False)
    slices = [
        {"kind": kind, "name": name, **stats}
        for kind, groups in report.summary["slices"].items()
        for name, stats in groups.items()
    ]
    pd.DataFrame(slices).to_csv(paths["slices"], index=False)
    _dice_histogram(report.per_image, report.summary, paths["histogram"])
    gallery_dir = out / "gallery"
    gallery_dir.mkdir(exist_ok=True)
    items = []
    for rank, (kind, info, panel) in enumerate(report.gallery):
        name = f"{kind}_{rank:02d}_{info['garment_id']}_{info['view']}.png"
        write_png(gallery_dir / name, panel)
        caption = (
            f"{kind}: {info['garment_id']} {info['view']}, Dice {info['dice']:.4f} ({info['difficulty']})"
        )
        items.append(
            f'<figure><img src="{html.escape(name)}" width="100%"><figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    s = report.summary
    paths["gallery"].write_text(
        "<!doctype html><meta charset='utf-8'><title>garmentseg gallery</title>"
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}figure{margin:1em 0}</style>"
        f"<h1>Worst and best test images</h1><p>n={s['n']}, median Dice {s['dice_median']:.4f}, "
        f"threshold {s['threshold']:.2f}. Panels: shot | truth | prediction | green overlay.</p>"
        + "\n".join(items)
    )
    return paths


@click.command("evaluate")
@click.option(
    "--model-uri", required=True, help="runs:/..., models:/name@alias, models:/name/version or a folder."
)
@config_options
@dataset_option
@click.option(
    "--split",
    default=None,
    type=click.Choice(["train", "valid", "test", "all"]),
    help="Default: all with --dataset (a folder is scored whole), else test.",
)
@click.option("--flip-tta/--no-flip-tta", default=None, help="Override evaluation.flip_tta.")
@click.option(
    "--out", default=None, type=click.Path(file_okay=False, path_type=Path), help="Write the report here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def evaluate_cmd(
    model_uri: str,
    profile: str | None,
    params: str | None,
    dataset: Path | None,
    split: str | None,
    flip_tta: bool | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Score a logged model at full resolution on a split, with slices, flags and a gallery."""
    cfg = load_config(profile, params)
    model = load_cutout_model(model_uri, cfg.tracking_uri)
    frame, root = load_dataset(cfg, dataset)
    split = split or ("all" if dataset else "test")
    report = evaluate(model, frame, root, cfg, split=split, flip=flip_tta)
    if out:
        write_report(report, out)
    if as_json:
        click.echo(json.dumps(finite(report.summary), indent=2, sort_keys=True))
    else:
        s = report.summary
        click.echo(
            f"{split}: n={s['n']} Dice median {s['dice_median']:.4f} mean {s['dice_mean']:.4f} "
            f"p10 {s['dice_p10']:.4f} IoU median {s['iou_median']:.4f} "
            f"outlier-corrected mean {s['outlier_corrected_mean']:.4f} ({s['outlier_rule']}); "
            f"BF ({s['bf_tolerance_px']} px) median {s['bf_score_median']:.3f}, "
            f"halo ({s['halo_band_px']:g} px) median {s['halo_median']:.3f}, refine {s['refine']}"
        )

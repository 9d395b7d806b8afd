"""The label audit: score every labelled pair against a model and rank the labels most likely wrong first.

The score is cleanlab's segmentation label-quality score (`cleanlab.segmentation.rank.
get_label_quality_scores`, method "softmin"): for each pixel, the model's probability of the class the label
gives it; for the image, a soft minimum over the pixels, so a patch the model confidently disputes weighs
far more than the blur along every edge. `quality_score` = 1 - that quality: 0 agrees, 1 disputed; the audit
score discounts it by the label's own edge evidence (`labels.evidence`, `combined_score`), and takes the
outline's own evidence when that is stronger (`audit_score`: a label cut a few pixels off the garment's
outline, which the model agrees with at its input size). Both maps are
shrunk to `labels.audit_height` x `labels.audit_width` first (INTER_AREA, as the model sees its input): a
1152x1728 pair's (2, H, W) float64 array is 32 MB, at 432x288 it is 2 MB. Softmin needs no other image, so
pairs are scored one at a time and memory does not grow with the batch.

A model trained on a label has learnt its mistake: on the demo champion's own training pairs the audit
found none of the 10 wrong labels in its top 10 (benchmarks/bench_label_audit.py --split train), while it
finds them on pairs it never saw. `audit_labels` marks such pairs `in_sample` when it knows the model's
training pairs, so a steward reads their low scores for what they are (see `labels.decisions`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from garmentseg.imageio import write_png
from garmentseg.inference import resize_down
from garmentseg.labels import disagreement
from garmentseg.labels.evidence import edge_support, off_outline_share

if TYPE_CHECKING:
    import pandas as pd

    from garmentseg.config import Config, LabelsConfig
    from garmentseg.inference import CutoutModel

log = logging.getLogger(__name__)

LABELS_DIR = "labels"  # under paths.reports_dir: overlays and the stewards' decisions
OUTLINE_FINDING = 0.5  # an outline score from here up is named as the finding (a right label's is ~0.05)


@dataclass(frozen=True)
class Suspect:
    """One audited pair: how likely its label is wrong, where the model disagrees, and the picture."""

    file: str  # <garment>_<View>
    score: float  # 1 - cleanlab label quality: higher = more likely wrong
    kind: str  # disagreement.KINDS (the largest disagreement's kind), or "outline" (audit_score)
    reason: str
    overlay: str  # path of the overlay PNG ("" when none was written)
    garment_id: str
    view: str
    cutout_sha256: str
    split: str
    in_sample: bool  # the scoring model was trained on this label
    quality_score: float = 0.0  # 1 - cleanlab's label quality alone
    edge_support: float = 1.0  # labels.evidence: ~1 the disputed label edge is on an image edge, ~0 it is not
    off_outline: float = 0.0  # labels.evidence.off_outline_share: the outline's share beside the image's edge
    decision: str | None = None  # a steward's word on this exact label: confirmed | released

    def public(self) -> dict[str, object]:
        """What `garmentseg labels audit --json` prints per pair (the command adds whether a retrain would
        leave it out)."""
        return {
            "file": self.file,
            "score": round(self.score, 6),
            "kind": self.kind,
            "reason": self.reason,
            "decision": self.decision,
            "in_sample": self.in_sample,
            "overlay": self.overlay,
        }

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def label_quality(label: np.ndarray, prob: np.ndarray, temperature: float) -> float:
    """cleanlab's softmin label quality (0..1, low = likely mislabelled) of one bool label vs P(garment)."""
    from cleanlab.segmentation.rank import get_label_quality_scores

    p = np.clip(np.asarray(prob, np.float64), 0.0, 1.0)
    pred_probs = np.stack([1.0 - p, p])[None]
    scores, _ = get_label_quality_scores(
        label.astype(np.int64)[None], pred_probs, method="softmin", temperature=temperature, verbose=False
    )
    return float(scores[0])


def shrink(shot: np.ndarray, label: np.ndarray, prob: np.ndarray, cfg: Config) -> tuple[np.ndarray, ...]:
    """Shot, bool label and probability at the audit size (INTER_AREA; the label re-cut at one half)."""
    h, w = cfg.labels.audit_height, cfg.labels.audit_width
    small_label = resize_down(label.astype(np.float32), h, w) >= 0.5
    return resize_down(shot, h, w), small_label, resize_down(np.asarray(prob, np.float32), h, w)


def combined_score(quality_score: float, edge_support: float, edge_weight: float) -> float:
    """The audit score: cleanlab's, discounted by up to `edge_weight` when the disputed label edge is as real
    an image edge as the label's others (the model's own mistake), untouched when it runs through nothing."""
    return quality_score * (1.0 - edge_weight * min(1.0, edge_support))


def audit_score(quality_score: float, support: float, off_outline: float, labels: LabelsConfig) -> float:
    """The stronger of two kinds of evidence: where the model disputes the label and the label's edge there
    runs through nothing (`combined_score`), and an outline drawn beside the image's edge, which counts fully
    once 1 / labels.outline_weight of the outline is off it."""
    region = combined_score(quality_score, support, labels.edge_weight)
    return max(region, min(1.0, labels.outline_weight * off_outline))


def outline_evidence(shot: np.ndarray, label: np.ndarray, labels: LabelsConfig) -> float:
    """`off_outline_share` at labels.outline_scale x the audit size (never above the shot's own size): a cut
    4 px too tight at 1152x1728 is one pixel at the audit size, two at twice it."""
    h = min(shot.shape[0], labels.audit_height * labels.outline_scale)
    w = min(shot.shape[1], labels.audit_width * labels.outline_scale)
    fine_label = resize_down(label.astype(np.float32), h, w) >= 0.5
    return off_outline_share(resize_down(shot, h, w), fine_label, labels.outline_ridge_px)


@dataclass(frozen=True)
class Judgement:
    score: float
    quality_score: float
    edge_support: float
    off_outline: float
    kind: str
    reason: str
    overlay: np.ndarray


def judge(
    file: str, shot: np.ndarray, label: np.ndarray, prob: np.ndarray, threshold: float, cfg: Config
) -> Judgement:
    """Scores, reason and overlay image of one full-resolution pair and its probability map."""
    small_shot, small_label, small_prob = shrink(shot, label, prob, cfg)
    quality_score = 1.0 - label_quality(small_label, small_prob, cfg.labels.temperature)
    pred = small_prob >= threshold
    share = cfg.labels.min_region_share
    support = edge_support(small_shot, small_label, pred, share)
    off = outline_evidence(shot, label, cfg.labels)
    score = audit_score(quality_score, support, off, cfg.labels)
    found, scattered = disagreement.regions(small_label, pred, min_share=share, band_px=cfg.labels.band_px)
    kind, reason = disagreement.describe(found, scattered, int(small_label.sum()), share)
    region_score = combined_score(quality_score, support, cfg.labels.edge_weight)
    scale = shot.shape[1] / small_label.shape[1]
    if whole := disagreement.whole_label(small_label, pred) or disagreement.shifted_label(
        small_label, pred, scale
    ):
        (kind, reason), score = whole, 1.0
    elif kind in ("none", "scattered") and score > region_score and score >= OUTLINE_FINDING:
        kind = "outline"
        reason = (
            f"outline: {off:.0%} of the label's edge runs a few px beside the image's edge, a cut too "
            f"tight or too loose that the model cannot see at its size; model: {reason}"
        )
    log.debug(
        "%s: score %.4f (cleanlab %.4f, support %.2f, off outline %.2f)",
        file,
        score,
        quality_score,
        support,
        off,
    )
    overlay = disagreement.overlay(small_shot, small_label, pred)
    return Judgement(score, quality_score, support, off, kind, reason, overlay)


def audit_labels(
    frame: pd.DataFrame,
    root: Path,
    model: CutoutModel,
    cfg: Config,
    *,
    out_dir: Path | None = None,
    trained_on: Iterable[tuple[str, str, str]] | None = None,
) -> list[Suspect]:
    """Every pair of the index `frame` (paths relative to `root`), ranked most-likely-wrong first.

    Overlays go to out_dir/overlays/<garment>_<View>.png when out_dir is given. `trained_on` holds the
    (garment_id, view, cutout_sha256) the model learnt from; those pairs are marked in_sample. Predictions
    come through evaluation's stream (the inference path, `evaluation.flip_tta`), as the platform serves them.
    """
    from garmentseg.evaluation import stream_predictions

    seen = set(trained_on or ())
    overlays = Path(out_dir) / "overlays" if out_dir else None
    suspects = []
    for row, shot, label, maps in stream_predictions(model, frame, Path(root), cfg, desc="audit labels"):
        file = f"{row['garment_id']}_{row['view']}"
        found = judge(file, shot, label, maps.prob, model.threshold, cfg)
        path = ""
        if overlays is not None:
            path = str(overlays / f"{file}.png")
            write_png(Path(path), found.overlay)
        sha = str(row.get("cutout_sha256", ""))
        suspects.append(
            Suspect(
                file=file,
                score=found.score,
                kind=found.kind,
                reason=found.reason,
                overlay=path,
                garment_id=str(row["garment_id"]),
                view=str(row["view"]),
                cutout_sha256=sha,
                split=str(row.get("split", "")),
                in_sample=(str(row["garment_id"]), str(row["view"]), sha) in seen,
                quality_score=found.quality_score,
                edge_support=found.edge_support,
                off_outline=found.off_outline,
            )
        )
    return rank(suspects)


def rank(suspects: Iterable[Suspect]) -> list[Suspect]:
    """Highest score first; ties by file name, so the order is the same on every machine."""
    return sorted(suspects, key=lambda s: (-s.score, s.file))


def default_out_dir(cfg: Config, name: str) -> Path:
    """<reports_dir>/labels/<name>: where an audit's overlays go unless told otherwise."""
    return cfg.path(cfg.paths.reports_dir) / LABELS_DIR / name

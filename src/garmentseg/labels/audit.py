"""The label audit: score every labelled pair against a model and rank the labels most likely wrong first.

The score is cleanlab's segmentation label-quality score (`cleanlab.segmentation.rank.
get_label_quality_scores`, method "softmin"): for each pixel, the model's probability of the class the label
gives it; for the image, a soft minimum over the pixels, so a patch the model confidently disputes weighs
far more than the blur along every edge. `quality_score` = 1 - that quality: 0 agrees, 1 disputed; the audit
score discounts it by the label's own edge evidence (`labels.evidence`, `combined_score`). Both maps are
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
from garmentseg.labels.evidence import edge_support

if TYPE_CHECKING:
    import pandas as pd

    from garmentseg.config import Config
    from garmentseg.inference import CutoutModel

log = logging.getLogger(__name__)

LABELS_DIR = "labels"  # under paths.reports_dir: overlays and the stewards' decisions


@dataclass(frozen=True)
class Suspect:
    """One audited pair: how likely its label is wrong, where the model disagrees, and the picture."""

    file: str  # <garment>_<View>
    score: float  # 1 - cleanlab label quality: higher = more likely wrong
    kind: str  # disagreement.KINDS: the largest disagreement's kind
    reason: str
    overlay: str  # path of the overlay PNG ("" when none was written)
    garment_id: str
    view: str
    cutout_sha256: str
    split: str
    in_sample: bool  # the scoring model was trained on this label
    quality_score: float = 0.0  # 1 - cleanlab's label quality alone
    edge_support: float = 1.0  # labels.evidence: ~1 the disputed label edge is on an image edge, ~0 it is not

    def public(self) -> dict[str, object]:
        """What `garmentseg labels audit --json` prints per pair."""
        return {
            "file": self.file,
            "score": round(self.score, 6),
            "reason": self.reason,
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


@dataclass(frozen=True)
class Judgement:
    score: float
    quality_score: float
    edge_support: float
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
    score = combined_score(quality_score, support, cfg.labels.edge_weight)
    found, scattered = disagreement.regions(small_label, pred, min_share=share, band_px=cfg.labels.band_px)
    kind, reason = disagreement.describe(found, scattered, int(small_label.sum()), share)
    log.debug(
        "%s: score %.4f (cleanlab %.4f, edge support %.2f), %s", file, score, quality_score, support, reason
    )
    overlay = disagreement.overlay(small_shot, small_label, pred)
    return Judgement(score, quality_score, support, kind, reason, overlay)


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
    for row, shot, label, prob in stream_predictions(model, frame, Path(root), cfg):
        file = f"{row['garment_id']}_{row['view']}"
        found = judge(file, shot, label, prob, model.threshold, cfg)
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
            )
        )
    return rank(suspects)


def rank(suspects: Iterable[Suspect]) -> list[Suspect]:
    """Highest score first; ties by file name, so the order is the same on every machine."""
    return sorted(suspects, key=lambda s: (-s.score, s.file))


def default_out_dir(cfg: Config, name: str) -> Path:
    """<reports_dir>/labels/<name>: where an audit's overlays go unless told otherwise."""
    return cfg.path(cfg.paths.reports_dir) / LABELS_DIR / name

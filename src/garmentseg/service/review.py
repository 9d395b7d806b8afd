"""/cutout's review answer: the Dice estimate and the review flag as headers, computed from the same
probabilities as the cutout, and with `?queue=true` the doubtful cutout recorded in the review queue."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from garmentseg.data.contract import ContractError, parse_shot_file
from garmentseg.service.errors import RequestError

if TYPE_CHECKING:
    from garmentseg.inference import CutoutModel
    from garmentseg.review.store import ReviewQueue
    from garmentseg.service.responses import Prediction

HEADER_ESTIMATE, HEADER_NEEDS_REVIEW = "X-Dice-Estimate", "X-Needs-Review"
QUEUE_SOURCE = "service"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


@dataclass(frozen=True)
class Rendered:
    """An answer's body with headers of its own (beyond the model headers every answer carries)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueRequest:
    """Where a /cutout?queue=true answer goes: the queue, and the shot's contract name."""

    queue: ReviewQueue
    file: str


def wants_queue(value: str | None) -> bool:
    """The `queue` query parameter: true/1/yes or false/0/no; anything else is a 400 naming it."""
    text = (value or "").strip().lower()
    if text not in _TRUE | _FALSE:
        raise RequestError(400, "bad_parameter", f"queue={value!r}: use queue=true or queue=false")
    return text in _TRUE


def queued_file(filename: str | None, model: CutoutModel) -> str:
    """The contract name (<garment>_<View>) a /cutout?queue=true shot is queued under, checked before the
    queue is opened and before inference: it needs a contract filename and a model with a Dice estimate."""
    try:
        key = parse_shot_file(Path(filename or "").name)
    except ContractError as exc:
        raise RequestError(
            400, "bad_filename", f"queue=true needs the upload's filename in the contract: {exc}"
        ) from None
    if model.quality is None:
        raise RequestError(
            409,
            "no_estimate",
            f"model version {model.model_version or 'unregistered'} carries no Dice estimate; nothing can be queued",
        )
    return key.stem


def review_headers(estimate: float, needs_review: bool) -> dict[str, str]:
    headers = {HEADER_NEEDS_REVIEW: "true" if needs_review else "false"}
    if math.isfinite(estimate):
        headers[HEADER_ESTIMATE] = f"{estimate:.4f}"
    return headers


def cutout_answer(
    p: Prediction, *, shot: bytes, queue: QueueRequest | None = None, alpha: str = "binary"
) -> Rendered:
    """The RGBA cutout PNG (alpha: serving.alpha) with its review headers; logged with its estimate and,
    when doubtful, queued, when the caller asks for the queue."""
    from garmentseg.service.responses import cutout_png

    estimate, needs_review = p.model.review(p.maps)
    if queue is not None and needs_review:  # as predict: only a doubtful cutout would be queued
        height, width = p.image.shape[:2]
        if problem := queue.queue.shot_problem(queue.file, width, height):
            raise RequestError(
                422,
                "not_queueable",
                f"{queue.file}: {problem}; send it without queue=true for the cutout alone",
            )
    png = cutout_png(p, alpha)
    if queue is not None:
        with tempfile.TemporaryDirectory() as tmp:  # record_cutout() copies both into the platform's storage
            suffix = ".png" if shot.startswith(PNG_SIGNATURE) else ".jpg"
            shot_path, cutout_path = Path(tmp) / f"shot{suffix}", Path(tmp) / "cutout.png"
            shot_path.write_bytes(shot)
            cutout_path.write_bytes(png)
            queue.queue.record_cutout(
                file=queue.file,
                shot=shot_path,
                cutout=cutout_path,
                estimate=estimate,
                needs_review=needs_review,
                model_version=p.model.model_version or "unregistered",
                source=QUEUE_SOURCE,
            )
    return Rendered(png, review_headers(estimate, needs_review))

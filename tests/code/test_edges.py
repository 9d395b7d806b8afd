"""The guided filter on hand-made shots: it moves a soft, misplaced edge onto the shot's edge and leaves a
sure region alone; the refinement a model carries round-trips through its metadata."""

from __future__ import annotations

import numpy as np
import pytest

from garmentseg.edges import Refinement, guided_filter, refine_proba

H, W, EDGE = 60, 80, 40  # the shot's garment starts at column EDGE


def _shot() -> np.ndarray:
    """Light backdrop on the left, a dark red garment from column EDGE on, with a little noise."""
    rng = np.random.default_rng(0)
    shot = np.full((H, W, 3), 210.0) + rng.normal(0, 2, (H, W, 3))
    shot[:, EDGE:] = np.array([150.0, 40.0, 70.0]) + rng.normal(0, 2, (H, W - EDGE, 3))
    return np.clip(shot, 0, 255).astype(np.uint8)


def _soft_edge(centre: float, width: float) -> np.ndarray:
    """An upsampled-looking probability: a sigmoid across the columns, centred off the true edge."""
    x = np.arange(W, dtype=np.float32)
    return np.tile(1 / (1 + np.exp(-(x - centre) / width)), (H, 1)).astype(np.float32)


def _first_garment_column(prob: np.ndarray) -> int:
    return int(np.argmax(prob[H // 2] >= 0.5))


@pytest.mark.parametrize("guide", ["colour", "grey"])
@pytest.mark.parametrize("subsample", [1, 4])
def test_guided_refinement_moves_a_soft_misplaced_edge_onto_the_shots_edge(guide: str, subsample: int):
    prob = _soft_edge(EDGE + 2.6, 2.5)
    assert _first_garment_column(prob) == EDGE + 3
    refined = refine_proba(prob, _shot(), Refinement("guided", guide, 8, 1e-3, subsample))
    assert refined.dtype == np.float32 and refined.shape == prob.shape
    assert refined.min() >= 0.0 and refined.max() <= 1.0
    assert _first_garment_column(refined) == EDGE
    # sharper: the step across the shot's edge is larger than the soft map's
    row = H // 2
    assert refined[row, EDGE] - refined[row, EDGE - 1] > 3 * (prob[row, EDGE] - prob[row, EDGE - 1])


def test_guided_filter_leaves_a_sure_region_alone_whatever_the_texture():
    rng = np.random.default_rng(1)
    pattern = rng.random((H, W, 3)).astype(np.float32)  # a busy garment print
    sure = np.full((H, W), 0.97, np.float32)
    out = guided_filter(pattern, sure, radius=6, eps=1e-3, subsample=1)
    assert np.abs(out - sure).max() < 1e-4


def test_refinement_none_is_the_probability_itself_and_round_trips():
    prob = _soft_edge(EDGE, 3.0)
    assert refine_proba(prob, _shot(), Refinement()) is prob
    guided = Refinement("guided", "grey", 4, 1e-2, 2)
    assert Refinement.from_dict(guided.to_dict()) == guided
    assert Refinement.from_dict(None) == Refinement()  # a model logged before refinement existed
    with pytest.raises(ValueError, match="refine='bilateral'"):
        Refinement("bilateral")
    with pytest.raises(ValueError, match="differ in size"):
        refine_proba(prob, _shot()[:10], guided)

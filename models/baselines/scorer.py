"""The interface every baseline (and the RLM's evaluator adapter) implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ItemScorer(Protocol):
    """Scores every catalogue item for each history; higher is better.

    `score` returns float32 of shape [len(histories), n_items]. Histories are lists of internal
    item indices in time order (oldest first). Scorers do NOT remove already-seen items: the
    evaluator does that (see `models.metrics.target_ranks(..., exclude=histories)`).
    """

    name: str

    def score(self, histories: list[list[int]]) -> np.ndarray: ...

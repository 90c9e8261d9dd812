"""Most-popular baseline: every user gets the same interaction counts."""

from __future__ import annotations

import numpy as np


def item_counts(sequences: list[list[int]], n_items: int) -> np.ndarray:
    """float64 occurrence count of every item in `sequences`; raises on out-of-range indices."""
    flat = np.fromiter((i for seq in sequences for i in seq), dtype=np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= n_items):
        raise ValueError(f"item indices must lie in [0, {n_items})")
    return np.bincount(flat, minlength=n_items).astype(np.float64)


class PopularityScorer:
    """Scores an item by how often it occurs in the training sequences."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, sequences: list[list[int]], n_items: int) -> PopularityScorer:
        self.counts = item_counts(sequences, n_items).astype(np.float32)
        return self

    def score(self, histories: list[list[int]]) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("PopularityScorer.fit must be called before score")
        return np.tile(self.counts, (len(histories), 1))

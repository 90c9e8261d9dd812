"""Item-to-item transition baseline (a windowed, smoothed first-order Markov chain).

Training counts every pair (a at position t, b at position t + d) with 1 <= d <= `window`,
weighted by `distance_decay ** (d - 1)`; rows are normalised to transition probabilities.
A history's score is the recency-weighted sum of the rows of its last `order` items,
plus a small popularity back-off so items never seen after those items still get ranked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptrec.models.baselines.popularity import item_counts


@dataclass(frozen=True)
class MarkovConfig:
    """Defaults: window and decays picked on ML-100k validation (warm users) at order 3."""

    order: int = 3
    """How many of the most recent history items vote (L)."""
    window: int = 5
    """Transitions a -> b are counted for b up to this many positions after a."""
    distance_decay: float = 0.8
    """Weight of a pair d positions apart is distance_decay ** (d - 1)."""
    recency_decay: float = 0.6
    """The j-th most recent history item (j = 0 newest) votes with weight recency_decay ** j."""
    popularity_weight: float = 1e-3
    """Weight of the normalised popularity distribution added to every row of scores."""


class MarkovScorer:
    """Sparse item-to-item transition scorer; see the module docstring."""

    name = "markov"

    def __init__(self, config: MarkovConfig = MarkovConfig()) -> None:
        if config.order < 1 or config.window < 1:
            raise ValueError("order and window must be >= 1")
        self.config = config
        self.n_items = 0
        # CSR transition matrix: row a holds cols[indptr[a]:indptr[a+1]] with probabilities.
        self.indptr: np.ndarray | None = None
        self.cols: np.ndarray = np.zeros(0, dtype=np.int64)
        self.probs: np.ndarray = np.zeros(0, dtype=np.float64)
        self.popularity = np.zeros(0, dtype=np.float64)

    def fit(self, sequences: list[list[int]], n_items: int) -> MarkovScorer:
        cfg = self.config
        counts = item_counts(sequences, n_items)  # also validates the indices
        total = counts.sum()
        self.popularity = counts / total if total > 0 else np.zeros(n_items)
        self.n_items = n_items

        keys, weights = [], []
        uniq: np.ndarray  # int64
        summed: np.ndarray  # float64 (numpy's stubs type a weighted bincount as integers)
        for seq in sequences:
            s = np.asarray(seq, dtype=np.int64)
            for d in range(1, min(cfg.window, len(s) - 1) + 1):
                keys.append(s[:-d] * n_items + s[d:])
                weights.append(np.full(len(s) - d, cfg.distance_decay ** (d - 1)))
        if keys:
            uniq, inverse = np.unique(np.concatenate(keys), return_inverse=True)
            summed = np.bincount(inverse, weights=np.concatenate(weights))
        else:
            uniq, summed = np.zeros(0, dtype=np.int64), np.zeros(0)
        rows, self.cols = uniq // n_items, uniq % n_items  # uniq is sorted, so rows are too
        self.indptr = np.searchsorted(rows, np.arange(n_items + 1))
        row_sums = np.bincount(rows, weights=summed, minlength=n_items)
        self.probs = summed / row_sums[rows] if len(summed) else summed
        return self

    def score(self, histories: list[list[int]]) -> np.ndarray:
        if self.indptr is None:
            raise RuntimeError("MarkovScorer.fit must be called before score")
        cfg = self.config
        out = np.tile(cfg.popularity_weight * self.popularity, (len(histories), 1))
        for row, history in enumerate(histories):
            for j, item in enumerate(reversed(history[-cfg.order :])):
                lo, hi = self.indptr[item], self.indptr[item + 1]
                out[row, self.cols[lo:hi]] += cfg.recency_decay**j * self.probs[lo:hi]
        return out.astype(np.float32)

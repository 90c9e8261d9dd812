"""Start item embeddings from item co-occurrence in the training sequences.

Trained from scratch on a CPU, a T5 spends most of its first epochs discovering which items go
together. A truncated SVD of the positive PMI of windowed co-occurrence (word2vec's implicit
factorisation, Levy & Goldberg 2014) gives that structure up front, computed from the same
training sequences the model sees, so nothing from validation or test leaks in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cooccurrence_embeddings(
    sequences: Sequence[Sequence[int]], n_items: int, dim: int, window: int = 5
) -> np.ndarray:
    """[n_items, dim] vectors with unit standard deviation (the scale of T5's embedding init)."""
    counts = np.zeros((n_items, n_items), dtype=np.float64)
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) > 1]
    for d in range(1, window + 1):
        a = np.concatenate([s[:-d] for s in arrays if len(s) > d] or [np.zeros(0, np.int64)])
        b = np.concatenate([s[d:] for s in arrays if len(s) > d] or [np.zeros(0, np.int64)])
        np.add.at(counts, (a, b), 1.0 / d)
    counts += counts.T
    total = counts.sum()
    if total == 0:
        return np.random.default_rng(0).standard_normal((n_items, dim))
    marginal = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / np.outer(marginal, marginal))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    u, s, _ = np.linalg.svd(ppmi, hermitian=True)
    vectors = u[:, :dim] * np.sqrt(s[:dim])
    if vectors.shape[1] < dim:  # fewer items than dimensions (tiny catalogues)
        vectors = np.pad(vectors, ((0, 0), (0, dim - vectors.shape[1])))
    return vectors / (vectors.std() or 1.0)

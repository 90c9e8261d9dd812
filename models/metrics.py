"""Ranking metrics for one held-out target per user, and paired bootstrap intervals."""

from __future__ import annotations

import numpy as np

CUTOFFS = (5, 10)


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: list[list[int]] | None
) -> np.ndarray:
    """0-based rank of each row's target among all items, excluded items removed first.

    Ties count against the target (a target tied with k others ranks below all of them), so a
    constant scorer cannot look good.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for row, items in enumerate(exclude):
            keep = [i for i in items if i != targets[row]]
            scores[row, keep] = -np.inf
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores >= target_scores[:, None]).sum(axis=1) - 1


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    return (ranks < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """With one relevant item, NDCG@k = 1 / log2(rank + 2) when it is in the top k."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def parse_metric(name: str) -> tuple[str, int]:
    """("HR" | "NDCG", cutoff k) of a metric name such as "NDCG@50"."""
    kind, sep, cutoff = name.partition("@")
    if sep and kind in ("HR", "NDCG") and cutoff.isdigit() and int(cutoff) >= 1:
        return kind, int(cutoff)
    raise ValueError(f"unknown metric {name!r}; use HR@k or NDCG@k with a whole number k >= 1")


def parse_metric_list(text: str) -> tuple[str, ...]:
    """Metric names from a comma-separated list such as "NDCG@10,HR@10", each one checked."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("name at least one metric, e.g. NDCG@10,HR@10")
    for name in names:
        parse_metric(name)
    return names


def metric(name: str, ranks: np.ndarray) -> np.ndarray:
    """Per-row HR@k or NDCG@k of 0-based ranks, for any cutoff k."""
    kind, k = parse_metric(name)
    return hit_rate(ranks, k) if kind == "HR" else ndcg(ranks, k)


def per_user_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    names = [f"{kind}@{k}" for k in CUTOFFS for kind in ("HR", "NDCG")]
    return {name: metric(name, ranks) for name in names}


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        name: float(values.mean()) if len(values) else float("nan")
        for name, values in per_user.items()
    }


def paired_bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of mean(a - b) over users resampled with replacement."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def bootstrap_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    return paired_bootstrap_ci(values, np.zeros_like(values, dtype=np.float64), n_resamples, seed)

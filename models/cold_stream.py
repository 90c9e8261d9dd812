"""The cold stream (DESIGN §2): every next-item prediction of the cold users, given the true prefix.

A cold user's full sequence is train + [valid, test]. From the 3rd interaction on, item t is
predicted from items [0, t); the target is ranked over the full catalogue with the prefix's
items excluded except the target itself (the rule of `models.metrics.target_ranks`).

Why a stream: 189 cold users have 189 test items, too few to show a 10% effect; ~19k
predictions are many more, but they are not independent (one user contributes up to hundreds).
So every figure here is a mean of per-user means, and intervals resample users, never
predictions: a heavy user counts once, as in the single-test-item protocol.

    stream = cold_stream(splits)
    a = evaluate_stream(stream, item_scorer_fn(markov), method="markov")
    b = evaluate_stream(stream, item_scorer_fn(sasrec), method="sasrec")
    a.summary()                      # JSON-able: metrics, CI, by history length
    compare(a, b, "NDCG@10")         # paired, user-level bootstrap CI of a - b
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from promptrec.models.baselines.scorer import ItemScorer
from promptrec.models.data.splits import Splits
from promptrec.models.metrics import bootstrap_ci, metric, paired_bootstrap_ci, target_ranks

METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
# (name, shortest prefix, longest prefix), both inclusive; DESIGN §2.
BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1-5", 1, 5),
    ("6-20", 6, 20),
    ("21-50", 21, 50),
    (">50", 51, math.inf),
)

ScoreFn = Callable[[list[int], list[list[int]]], np.ndarray]
"""(user indices, prefix histories) -> float scores [n, n_items]; higher is better. The user
index is passed so that a scorer can read the user's profile (the RLM's prompt words)."""


@dataclass(frozen=True)
class ColdStream:
    """All predictions of a set of users, flat and in order (user by user, t ascending).

    Prefixes are not stored: prediction i's history is `sequences[pos[i]][:prefix_len[i]]`,
    cut when a chunk is scored.
    """

    n_items: int
    users: np.ndarray
    """User indices (into `Splits.users`) with at least one prediction, in stream order."""
    sequences: tuple[tuple[int, ...], ...]
    """Full sequence (train + valid + test) of each of `users`, aligned with it."""
    owner: np.ndarray
    """Per prediction: the user index it belongs to."""
    pos: np.ndarray
    """Per prediction: the position of its owner in `users` (and `sequences`)."""
    prefix_len: np.ndarray
    """Per prediction: the number of items in its input history (t for target seq[t])."""
    target: np.ndarray
    """Per prediction: the item to rank, seq[prefix_len]."""

    def __len__(self) -> int:
        return len(self.target)

    def history(self, i: int) -> list[int]:
        return list(self.sequences[self.pos[i]][: self.prefix_len[i]])

    def histories(self, lo: int, hi: int) -> list[list[int]]:
        """Prefix histories of predictions lo .. hi - 1 (a chunk: built on demand)."""
        return [self.history(i) for i in range(lo, hi)]

    def same_predictions(self, other: ColdStream) -> bool:
        return (
            self.n_items == other.n_items
            and np.array_equal(self.owner, other.owner)
            and np.array_equal(self.prefix_len, other.prefix_len)
            and np.array_equal(self.target, other.target)
        )


def cold_stream(
    splits: Splits, users: Sequence[int] | np.ndarray | None = None, min_prefix: int = 2
) -> ColdStream:
    """The stream of `users` (default: the cold users), predicting seq[t] for t >= min_prefix.

    Users whose sequence is too short for one prediction are left out of `users`.
    """
    if min_prefix < 1:
        raise ValueError("min_prefix must be >= 1: an empty history is not a prediction")
    chosen = splits.user_indices("cold") if users is None else np.asarray(users, dtype=np.int64)
    if len(set(chosen.tolist())) != len(chosen):
        raise ValueError("users must not repeat: each user counts once in every mean")
    kept: list[int] = []
    sequences, owner, pos, prefix_len = [], [], [], []
    for u in chosen.tolist():
        seq = (*splits.train[u], splits.valid[u], splits.test[u])
        n = len(seq) - min_prefix
        if n <= 0:
            continue
        owner.append(np.full(n, u, dtype=np.int64))
        pos.append(np.full(n, len(kept), dtype=np.int64))
        prefix_len.append(np.arange(min_prefix, len(seq), dtype=np.int64))
        kept.append(u)
        sequences.append(seq)
    empty = np.zeros(0, dtype=np.int64)
    prefix = np.concatenate(prefix_len) if prefix_len else empty
    pos_all = np.concatenate(pos) if pos else empty
    target = np.array(
        [sequences[p][t] for p, t in zip(pos_all.tolist(), prefix.tolist(), strict=True)],
        dtype=np.int64,
    )
    return ColdStream(
        n_items=splits.n_items,
        users=np.asarray(kept, dtype=np.int64),
        sequences=tuple(sequences),
        owner=np.concatenate(owner) if owner else empty,
        pos=pos_all,
        prefix_len=prefix,
        target=target,
    )


def item_scorer_fn(scorer: ItemScorer) -> ScoreFn:
    """A baseline as a stream scorer: it ranks from the history alone, the user is ignored."""

    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        return scorer.score(histories)

    return score


@dataclass(frozen=True)
class Comparison:
    """a - b on one metric over the same users: means of per-user means, user-level CI."""

    method_a: str
    method_b: str
    metric: str
    n_users: int
    mean_a: float
    mean_b: float
    diff: float
    ci95: tuple[float, float]

    @property
    def relative(self) -> float | None:
        return self.diff / self.mean_b if self.mean_b else None

    def as_dict(self) -> dict:
        return {
            "reference": self.method_b,
            "metric": self.metric,
            "n_users": self.n_users,
            f"diff_{self.metric}": round(self.diff, 5),
            "relative": None if self.relative is None else round(self.relative, 4),
            f"ci95_diff_{self.metric}": [round(x, 5) for x in self.ci95],
        }


@dataclass(frozen=True)
class StreamResult:
    """One method's rank of every stream prediction (0-based, seen items excluded)."""

    method: str
    stream: ColdStream
    ranks: np.ndarray
    n_resamples: int = 2000
    """Bootstrap resamples of users for every interval."""
    seed: int = 0
    """Bootstrap seed: the same for every method, so paired intervals are reproducible."""

    @property
    def owners(self) -> np.ndarray:
        return self.stream.owner

    def per_prediction(self, name: str) -> np.ndarray:
        return metric(name, self.ranks)

    def per_user(self, name: str = "NDCG@10") -> np.ndarray:
        """Mean of `name` over each user's predictions, aligned with `stream.users`."""
        return _user_means(self.per_prediction(name), self.stream.pos, len(self.stream.users))

    def metrics(self) -> dict[str, float]:
        """Per-user means first, then the mean over users (never pooled over predictions)."""
        return {name: _mean(self.per_user(name)) for name in METRICS}

    def by_history_len(self) -> dict[str, dict]:
        """Per bucket of prefix length: users with predictions there, their per-user means."""
        out = {}
        for name, lo, hi in BUCKETS:
            mask = (self.stream.prefix_len >= lo) & (self.stream.prefix_len <= hi)
            pos = self.stream.pos[mask]
            present = np.unique(pos)
            metrics = {}
            for m in METRICS:
                means = _user_means(self.per_prediction(m)[mask], pos, len(self.stream.users))
                metrics[m] = _mean(means[present])
            out[name] = {
                "n_users": len(present),
                "n_predictions": int(mask.sum()),
                "metrics": metrics,
            }
        return out

    def summary(self, reference: StreamResult | None = None, digits: int = 5) -> dict:
        """A JSON-able row for a benchmark report; `reference` adds the paired NDCG@10 CI."""
        row = {
            "method": self.method,
            "n_users": len(self.stream.users),
            "n_predictions": len(self.stream),
            "metrics": _rounded(self.metrics(), digits),
            "ci95_NDCG@10": [
                round(x, digits)
                for x in bootstrap_ci(self.per_user("NDCG@10"), self.n_resamples, self.seed)
            ]
            if len(self.stream.users)
            else None,
            "by_history_len": {
                bucket: {**info, "metrics": _rounded(info["metrics"], digits)}
                for bucket, info in self.by_history_len().items()
            },
        }
        if reference is not None:
            row["vs"] = compare(self, reference).as_dict()
        return row


def evaluate_stream(
    stream: ColdStream,
    score_fn: ScoreFn,
    batch_size: int = 256,
    method: str = "method",
    progress: bool = False,
) -> StreamResult:
    """Scores the stream chunk by chunk; each chunk is reduced to ranks at once, so memory is
    one [batch_size, n_items] matrix, never [len(stream), n_items]."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    ranks = np.empty(len(stream), dtype=np.int64)
    bar = tqdm(total=len(stream), desc=f"cold stream {method}", disable=not progress)
    for lo in range(0, len(stream), batch_size):
        hi = min(lo + batch_size, len(stream))
        histories = stream.histories(lo, hi)
        scores = np.asarray(score_fn(stream.owner[lo:hi].tolist(), histories))
        if scores.shape != (hi - lo, stream.n_items):
            raise ValueError(
                f"score_fn returned shape {scores.shape}, expected {(hi - lo, stream.n_items)}"
            )
        if np.isnan(scores).any():
            # NaN compares false with everything: the target would rank -1, a false hit.
            raise ValueError("score_fn returned NaN scores")
        ranks[lo:hi] = target_ranks(scores, stream.target[lo:hi], exclude=histories)
        bar.update(hi - lo)
    bar.close()
    return StreamResult(method, stream, ranks)


def compare(a: StreamResult, b: StreamResult, metric: str = "NDCG@10") -> Comparison:
    """a - b: mean over users of per-user mean differences, with a paired bootstrap CI that
    resamples users (their predictions move together)."""
    if not a.stream.same_predictions(b.stream):
        raise ValueError(f"{a.method} and {b.method} were scored on different streams")
    per_a, per_b = a.per_user(metric), b.per_user(metric)
    if not len(per_a):
        raise ValueError("the stream has no predictions to compare")
    return Comparison(
        method_a=a.method,
        method_b=b.method,
        metric=metric,
        n_users=len(per_a),
        mean_a=_mean(per_a),
        mean_b=_mean(per_b),
        diff=_mean(per_a - per_b),
        ci95=paired_bootstrap_ci(per_a, per_b, a.n_resamples, a.seed),
    )


def _user_means(values: np.ndarray, pos: np.ndarray, n_users: int) -> np.ndarray:
    """Mean of `values` per user position; NaN for a user without values here."""
    sums = np.bincount(pos, weights=values, minlength=n_users)
    counts = np.bincount(pos, minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _rounded(metrics: dict[str, float], digits: int) -> dict[str, float | None]:
    """None for an empty mean: NaN is not JSON."""
    return {k: None if math.isnan(v) else round(v, digits) for k, v in metrics.items()}

"""The cold stream: every next-item prediction of cold users, per-user means, buckets, paired CI.

Expected ranks are worked out by hand from one fixed score vector (see SCORES).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from promptrec.models.baselines import PopularityScorer
from promptrec.models.cold_stream import (
    BUCKETS,
    cold_stream,
    compare,
    evaluate_stream,
    item_scorer_fn,
)
from promptrec.models.data.splits import Splits
from promptrec.models.metrics import paired_bootstrap_ci
from promptrec.models.stream_report import stream_table

# Item -> score for 6 items; by score the order is 1, 3, 0, 5, 2, 4.
SCORES = np.array([3.0, 5.0, 1.0, 4.0, 0.0, 2.0], dtype=np.float32)


def make_splits(sequences: list[list[int]], cold: list[bool], n_items: int = 6) -> Splits:
    """Splits from full sequences: the last item is test, the one before valid."""
    return Splits(
        item_ids=[f"i{k}" for k in range(n_items)],
        users=[f"u{u}" for u in range(len(sequences))],
        train=[s[:-2] for s in sequences],
        valid=[s[-2] for s in sequences],
        test=[s[-1] for s in sequences],
        cold=np.array(cold),
    )


def fixed_scorer(users: list[int], histories: list[list[int]]) -> np.ndarray:
    return np.tile(SCORES, (len(histories), 1))


def ndcg(rank: int) -> float:
    return 1.0 / math.log2(rank + 2)


@pytest.fixture
def tiny() -> Splits:
    # u0 cold: 3 predictions. u1 warm: never in the default stream. u2 cold: target 5 repeats
    # an item of its prefix [5, 0].
    return make_splits([[0, 1, 2, 3, 4], [5, 0, 1, 2], [5, 0, 5]], cold=[True, False, True])


def test_stream_holds_every_prediction_from_the_third_interaction(tiny: Splits) -> None:
    stream = cold_stream(tiny)
    assert stream.users.tolist() == [0, 2]
    assert stream.owner.tolist() == [0, 0, 0, 2]
    assert stream.prefix_len.tolist() == [2, 3, 4, 2]
    assert stream.target.tolist() == [2, 3, 4, 5]
    assert stream.histories(0, 4) == [[0, 1], [0, 1, 2], [0, 1, 2, 3], [5, 0]]
    assert len(cold_stream(tiny, min_prefix=1)) == 4 + 2
    assert cold_stream(tiny, users=[1]).target.tolist() == [1, 2]
    # A user with too short a sequence for min_prefix has no prediction and is left out.
    assert cold_stream(tiny, min_prefix=3).users.tolist() == [0]


def test_ranks_exclude_the_prefix_but_not_a_repeated_target(tiny: Splits) -> None:
    result = evaluate_stream(cold_stream(tiny), fixed_scorer)
    # u0: target 2 with 0, 1 removed -> 3 and 5 above it; target 3 with 0-2 removed -> top;
    # target 4 with 0-3 removed -> 5 above it. u2: target 5 stays although it is in the prefix;
    # 0 is removed, so only 1 and 3 are above it (rank 3 if 0 were kept).
    assert result.ranks.tolist() == [2, 0, 1, 2]
    assert result.owners.tolist() == [0, 0, 0, 2]


def test_metrics_average_per_user_first_not_pooled(tiny: Splits) -> None:
    result = evaluate_stream(cold_stream(tiny), fixed_scorer)
    u0 = (ndcg(2) + ndcg(0) + ndcg(1)) / 3
    u2 = ndcg(2)
    np.testing.assert_allclose(result.per_user("NDCG@10"), [u0, u2])
    pooled = (ndcg(2) + ndcg(0) + ndcg(1) + ndcg(2)) / 4
    assert result.metrics()["NDCG@10"] == pytest.approx((u0 + u2) / 2)
    assert result.metrics()["NDCG@10"] != pytest.approx(pooled)
    assert result.metrics()["HR@5"] == 1.0
    assert set(result.metrics()) == {"HR@5", "NDCG@5", "HR@10", "NDCG@10"}


def test_history_length_buckets_have_inclusive_bounds() -> None:
    # u0: prefix lengths 2..59 over a 6-item cycle. u1: the tiny u0, lengths 2..4.
    cycle = [t % 6 for t in range(60)]
    splits = make_splits([cycle, [0, 1, 2, 3, 4]], cold=[True, True])
    result = evaluate_stream(cold_stream(splits), fixed_scorer)
    buckets = result.by_history_len()
    assert list(buckets) == [name for name, _, _ in BUCKETS] == ["1-5", "6-20", "21-50", ">50"]
    counts = {b: (v["n_users"], v["n_predictions"]) for b, v in buckets.items()}
    # 2..5 (+3 of u1), 6..20, 21..50, 51..59.
    assert counts == {"1-5": (2, 4 + 3), "6-20": (1, 15), "21-50": (1, 30), ">50": (1, 9)}
    # From t = 6 on the prefix holds every item but the target: rank 0.
    for name in ("6-20", "21-50", ">50"):
        assert buckets[name]["metrics"]["NDCG@10"] == 1.0
    # "1-5": the cycle user's targets 2, 3, 4, 5 rank 2, 0, 1, 0; the other user's 2, 0, 1;
    # the bucket is the mean of the two users' means, not of the 7 predictions.
    cycle_user = (ndcg(2) + ndcg(0) + ndcg(1) + ndcg(0)) / 4
    short_user = (ndcg(2) + ndcg(0) + ndcg(1)) / 3
    assert buckets["1-5"]["metrics"]["NDCG@10"] == pytest.approx((cycle_user + short_user) / 2)
    with_one = evaluate_stream(cold_stream(splits, min_prefix=1), fixed_scorer).by_history_len()
    assert with_one["1-5"]["n_predictions"] == 4 + 3 + 2  # prefix length 1 counts in "1-5"


def test_scores_are_consumed_in_chunks_with_owner_indices(tiny: Splits) -> None:
    stream = cold_stream(tiny)
    calls = []

    def spy(users: list[int], histories: list[list[int]]) -> np.ndarray:
        calls.append(list(users))
        assert len(users) == len(histories) <= 3
        return fixed_scorer(users, histories)

    chunked = evaluate_stream(stream, spy, batch_size=3)
    assert calls == [[0, 0, 0], [2]]
    whole = evaluate_stream(stream, fixed_scorer, batch_size=1000)
    np.testing.assert_array_equal(chunked.ranks, whole.ranks)


def test_bad_scores_are_refused(tiny: Splits) -> None:
    stream = cold_stream(tiny)
    with pytest.raises(ValueError, match="shape"):
        evaluate_stream(stream, lambda u, h: np.zeros((len(h), 5)))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_stream(stream, lambda u, h: np.full((len(h), 6), np.nan))


def test_item_scorer_adapter_ranks_by_the_scorer(tiny: Splits) -> None:
    # Counts over the fit sequences: item 4 x3, item 1 x2, the rest x1 or 0.
    popularity = PopularityScorer().fit([[4, 4, 4, 1, 1, 0]], n_items=6)
    result = evaluate_stream(cold_stream(tiny), item_scorer_fn(popularity))
    # Target 2 (count 0, tied with 3 and 5: ties count against it) with 0, 1 removed: 4, 3, 5
    # rank at or above it -> 3; target 3 tied with 5 below 4 -> 2; target 4 -> 0;
    # target 5 (count 0) with 0 removed: 4, 1, 2, 3 at or above it -> 4.
    assert result.ranks.tolist() == [3, 2, 0, 4]


def oracle_splits(n_users: int, heavy: int) -> Splits:
    """Cold users over 30 items; user 0 has `heavy` predictions, every other user one."""
    rng = np.random.default_rng(0)
    sequences = [list(rng.permutation(30)[: heavy + 2])]
    sequences += [list(rng.permutation(30)[:3]) for _ in range(n_users - 1)]
    return make_splits(sequences, cold=[True] * n_users, n_items=30)


def oracle(stream, good_users: set[int]):
    """Target first for `good_users`, last for everyone else (NDCG@10 of 1 or 0)."""

    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(users), stream.n_items), dtype=np.float32)
        for row, (u, h) in enumerate(zip(users, histories, strict=True)):
            full = stream.sequences[list(stream.users).index(u)]
            out[row, full[len(h)]] = 1.0 if u in good_users else -1.0
        return out

    return score


def test_compare_resamples_users_not_predictions() -> None:
    stream = cold_stream(oracle_splits(n_users=20, heavy=25))
    assert len(stream) == 25 + 19
    # a is perfect for everyone; b only for users 0..9: per-user diffs are ten 0s and ten 1s,
    # while pooled over predictions b would be perfect on 25 + 9 of 44.
    a = evaluate_stream(stream, oracle(stream, set(range(20))), method="a")
    b = evaluate_stream(stream, oracle(stream, set(range(10))), method="b")
    c = compare(a, b)
    assert (c.mean_a, c.mean_b, c.diff, c.n_users) == (1.0, 0.5, 0.5, 20)
    assert c.ci95 == paired_bootstrap_ci(np.ones(20), np.repeat([1.0, 0.0], 10))
    assert c.ci95[0] < 0.5 < c.ci95[1]
    assert c.ci95[0] > 0.2 and c.ci95[1] < 0.8  # 20 users, not 44 predictions nor 1 user
    assert c.as_dict()["diff_NDCG@10"] == 0.5


def test_compare_of_identical_scorers_is_zero_with_degenerate_ci(tiny: Splits) -> None:
    stream = cold_stream(tiny)
    a = evaluate_stream(stream, fixed_scorer, method="a")
    b = evaluate_stream(stream, fixed_scorer, method="b")
    c = compare(a, b, metric="HR@5")
    assert (c.diff, c.ci95) == (0.0, (0.0, 0.0))
    assert compare(a, b).ci95 == (0.0, 0.0)


def test_compare_refuses_different_streams(tiny: Splits) -> None:
    a = evaluate_stream(cold_stream(tiny), fixed_scorer)
    b = evaluate_stream(cold_stream(tiny, min_prefix=1), fixed_scorer)
    with pytest.raises(ValueError, match="different streams"):
        compare(a, b)


def test_summary_is_a_json_row(tiny: Splits) -> None:
    stream = cold_stream(tiny)
    a = evaluate_stream(stream, fixed_scorer, method="fixed")
    row = json.loads(json.dumps(a.summary(reference=a)))
    assert row["method"] == "fixed"
    assert (row["n_users"], row["n_predictions"]) == (2, 4)
    assert row["metrics"]["NDCG@10"] == round(a.metrics()["NDCG@10"], 5)
    lo, hi = row["ci95_NDCG@10"]
    assert lo <= row["metrics"]["NDCG@10"] <= hi
    assert row["by_history_len"]["1-5"]["n_predictions"] == 4
    assert row["by_history_len"][">50"] == {
        "n_users": 0,
        "n_predictions": 0,
        "metrics": {m: None for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10")},
    }
    assert row["vs"]["reference"] == "fixed" and row["vs"]["diff_NDCG@10"] == 0.0
    table = stream_table([row]).splitlines()
    assert table[3].split()[:3] == ["fixed", "2", "4"]


def test_stream_refuses_repeated_users_and_empty_prefixes(tiny: Splits) -> None:
    with pytest.raises(ValueError):
        cold_stream(tiny, users=[0, 0])
    with pytest.raises(ValueError):
        cold_stream(tiny, min_prefix=0)

import math

import numpy as np
import pytest

from promptrec.models.metrics import (
    hit_rate,
    metric,
    ndcg,
    paired_bootstrap_ci,
    parse_metric_list,
    per_user_metrics,
    summarize,
    target_ranks,
)


def test_ranks_count_items_scored_at_least_as_high_as_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.4, 0.4]])
    # Row 0: target item 2 (0.5) is beaten by item 1 only. Row 1: ties count against the target.
    assert target_ranks(scores, np.array([2, 0]), exclude=None).tolist() == [1, 3]


def test_excluded_items_are_removed_before_ranking_but_never_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.3]])
    assert target_ranks(scores, np.array([2]), exclude=[[1]]).tolist() == [0]
    assert target_ranks(scores, np.array([2]), exclude=[[1, 2]]).tolist() == [0]


def test_hit_rate_and_ndcg_by_hand():
    ranks = np.array([0, 1, 4, 5, 9, 10])
    assert hit_rate(ranks, 5).tolist() == [1, 1, 1, 0, 0, 0]
    assert hit_rate(ranks, 10).tolist() == [1, 1, 1, 1, 1, 0]
    expected = [1.0, 1 / math.log2(3), 1 / math.log2(6), 1 / math.log2(7), 1 / math.log2(11), 0.0]
    assert ndcg(ranks, 10) == pytest.approx(expected)
    assert ndcg(ranks, 5)[3] == 0.0


def test_any_cutoff_by_name():
    ranks = np.array([0, 9, 10, 49, 50])
    assert metric("HR@50", ranks).tolist() == [1, 1, 1, 1, 0]
    expected = [1.0, 1 / math.log2(11), 1 / math.log2(12), 1 / math.log2(51), 0.0]
    assert metric("NDCG@50", ranks) == pytest.approx(expected)
    assert metric("NDCG@10", ranks) == pytest.approx([1.0, 1 / math.log2(11), 0.0, 0.0, 0.0])


@pytest.mark.parametrize("name", ["MRR", "NDCG@0", "HR@", "ndcg@10", "NDCG@ten", "NDCG10"])
def test_an_unknown_metric_name_is_refused(name):
    with pytest.raises(ValueError, match="unknown metric"):
        metric(name, np.array([0]))


def test_a_metric_list_is_split_trimmed_and_checked():
    assert parse_metric_list(" NDCG@10, HR@50 ,") == ("NDCG@10", "HR@50")
    for text in ("", " , ", "NDCG@10,MRR"):
        with pytest.raises(ValueError, match="metric"):
            parse_metric_list(text)


def test_summary_averages_over_users():
    summary = summarize(per_user_metrics(np.array([0, 20])))
    assert summary["HR@10"] == 0.5
    assert summary["NDCG@10"] == 0.5


def test_paired_bootstrap_interval_brackets_the_mean_difference():
    rng = np.random.default_rng(0)
    a = rng.random(500)
    lo, hi = paired_bootstrap_ci(a + 0.1, a)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    b = rng.random(500)
    lo, hi = paired_bootstrap_ci(a, b)
    assert lo < (a - b).mean() < hi

"""Does the RLM read its words? NDCG@10 with each user's own profile and taste words against
the words of other users (and none): on the test items, and on the cold stream's shortest
histories, where words have the most to add."""

from __future__ import annotations

import numpy as np

from promptrec.models.cold_stream import cold_stream, evaluate_stream
from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import (
    full_ranking_metrics,
    rlm_scores,
    rlm_stream_scorer,
    user_fields,
)
from promptrec.models.metrics import paired_bootstrap_ci
from promptrec.models.rlm.model import RecLM
from promptrec.models.stream_report import SHORT_HISTORY, short_prefixes
from promptrec.models.user_context import ItemCatalog

SHUFFLES = 5
"""Permutations of a user's words averaged per user."""


def sensitivity(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    split: str = "test",
    seed: int = 0,
    shuffles: int = SHUFFLES,
) -> dict:
    """NDCG@10 with each user's own profile/taste words vs the words of other (random) users.

    A user's shuffled figure is their mean over `shuffles` seeded permutations: one permutation
    adds the luck of who got whose words to the comparison; the CI is then over users.
    """
    users = range(len(splits.users))
    rng = np.random.default_rng(seed)

    def ndcg(fields) -> np.ndarray:
        return full_ranking_metrics(rlm_scores(lm, fields, template), splits, users, split)[
            "NDCG@10"
        ]

    true = ndcg(user_fields(splits, catalog, profiles, users, split))
    each = [
        ndcg(
            user_fields(
                splits, catalog, profiles, users, split, words_from=rng.permutation(users).tolist()
            )
        )
        for _ in range(shuffles)
    ]
    shuffled = np.mean(each, axis=0)
    none = ndcg(user_fields(splits, catalog, profiles, users, split, with_words=False))
    return {
        "template": template,
        "split": split,
        "users": "all",
        "n": len(users),
        "shuffles": shuffles,
        **_word_comparison(true, shuffled, each, none),
    }


def short_history_sensitivity(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    longest: int = SHORT_HISTORY,
    shuffles: int = SHUFFLES,
    seed: int = 0,
) -> dict:
    """Cold-stream NDCG@10 at histories of 1..`longest` items with each user's own profile and
    taste words, with another cold user's (a seeded permutation, `shuffles` of them averaged
    per user), and with none; the CI of true - shuffled resamples users."""
    stream = short_prefixes(cold_stream(splits), longest)
    users = stream.users.tolist()
    if not len(stream) or len(np.unique(stream.pos)) != len(users):
        raise ValueError(f"every cold user needs a prediction from {longest} items or fewer")
    rng = np.random.default_rng(seed)

    def per_user(**kwargs) -> np.ndarray:
        fn = rlm_stream_scorer(lm, splits, catalog, profiles, template, **kwargs)
        return evaluate_stream(stream, fn).per_user("NDCG@10")

    true = per_user()
    each = [
        per_user(words_from=dict(zip(users, rng.permutation(users).tolist(), strict=True)))
        for _ in range(shuffles)
    ]
    shuffled = np.mean(each, axis=0)
    none = per_user(with_words=False)
    return {
        "template": template,
        "history_len": f"1-{longest}",
        "n_users": len(users),
        "n_predictions": len(stream),
        "shuffles": shuffles,
        **_word_comparison(true, shuffled, each, none),
    }


def _word_comparison(
    true: np.ndarray, shuffled: np.ndarray, each: list[np.ndarray], none: np.ndarray
) -> dict:
    """Per-user NDCG@10 with the true words, shuffled words (mean and each shuffle), no words;
    the true-minus-shuffled difference with its user-level paired CI."""
    lo, hi = paired_bootstrap_ci(true, shuffled)
    return {
        "true_words_NDCG@10": round(float(true.mean()), 5),
        "shuffled_words_NDCG@10": round(float(shuffled.mean()), 5),
        "shuffled_words_NDCG@10_each": [round(float(x.mean()), 5) for x in each],
        "no_words_NDCG@10": round(float(none.mean()), 5),
        "diff": round(float((true - shuffled).mean()), 5),
        "ci95_diff": [round(lo, 5), round(hi, 5)],
    }

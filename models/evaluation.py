"""Offline evaluation: full ranking and 1+99 sampled ranking, per user, for any scorer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from promptrec.models.data.splits import Splits
from promptrec.models.metrics import per_user_metrics, target_ranks
from promptrec.models.prompts.rendering import UserPrompt, render_prompt
from promptrec.models.ranking import encode_token_lists, rank_items, rows_per_call
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, PromptFields
from promptrec.models.user_context import ItemCatalog

Scores = Callable[[list[int]], np.ndarray]  # user indices -> [n, n_items] scores
N_NEGATIVES = 99


def user_fields(
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    users: Sequence[int],
    split: str,
    with_words: bool = True,
    words_from: Sequence[int] | None = None,
) -> list[PromptFields]:
    """Prompt fields per user; `words_from[j]` lends user j the profile/taste of another user."""
    out = []
    for j, u in enumerate(users):
        history = splits.history(u, split)
        donor = words_from[j] if words_from is not None else u
        profile, taste = [], []
        if with_words:
            profile = profiles[donor]
            taste = catalog.taste_words(splits.history(donor, split))
        out.append(PromptFields(history, profile, taste))
    return out


def rlm_scores(
    lm: RecLM,
    fields: Sequence[PromptFields],
    template: str,
    prompts: Sequence[UserPrompt] | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """Item scores per user; `prompts[j]` appends user j's trigger tokens (PAP-REC layout)."""
    tpl = TEMPLATES[template]
    prompts = prompts or [UserPrompt()] * len(fields)
    batch_size = batch_size or rows_per_call(lm.device)
    out = []
    for start in range(0, len(fields), batch_size):
        rows = range(start, min(start + batch_size, len(fields)))
        tokens = [render_prompt(tpl, fields[j], prompts[j], lm.max_history) for j in rows]
        out.append(rank_items(lm, *encode_token_lists(lm, tokens)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, lm.n_items), dtype=np.float32)


def full_ranking_metrics(
    scores: np.ndarray, splits: Splits, users: Sequence[int], split: str
) -> dict[str, np.ndarray]:
    targets = np.array([splits.target(u, split) for u in users])
    histories = [splits.history(u, split) for u in users]
    return per_user_metrics(target_ranks(scores, targets, exclude=histories))


def sampled_negatives(
    splits: Splits, users: Sequence[int], split: str, seed: int = 0
) -> np.ndarray:
    """Per user: the target in column 0, then 99 seeded items the user never interacted with
    (fewer only when a small catalogue has not 99 such items for every user)."""
    rng = np.random.default_rng([seed, 99])
    pools = []
    for u in users:
        seen = np.fromiter({*splits.train[u], splits.valid[u], splits.test[u]}, dtype=np.int64)
        pools.append(np.setdiff1d(np.arange(splits.n_items), seen))
    k = min(N_NEGATIVES, *(len(p) for p in pools)) if pools else N_NEGATIVES
    out = np.zeros((len(users), k + 1), dtype=np.int64)
    for j, (u, pool) in enumerate(zip(users, pools, strict=True)):
        out[j, 0] = splits.target(u, split)
        out[j, 1:] = rng.choice(pool, size=k, replace=False)
    return out


def sampled_ranking_metrics(scores: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
    sub = np.take_along_axis(scores, candidates, axis=1)
    return per_user_metrics(target_ranks(sub, np.zeros(len(sub), dtype=np.int64), exclude=None))


def evaluate_rlm(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    users: Sequence[int],
    split: str,
    template: str,
) -> dict[str, np.ndarray]:
    """Per-user full-ranking metrics of the RLM with a manual template and true words."""
    with torch.inference_mode():
        fields = user_fields(splits, catalog, profiles, users, split)
        return full_ranking_metrics(rlm_scores(lm, fields, template), splits, users, split)


def full_sequence(splits: Splits, u: int) -> list[int]:
    """Everything user u did, in time order: train, then validation, then test."""
    return [*splits.train[u], splits.valid[u], splits.test[u]]


def rlm_stream_scorer(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    template: str,
    with_words: bool = True,
    words_from: dict[int, int] | None = None,
    prompts: dict[int, UserPrompt] | None = None,
) -> Callable[[list[int], list[list[int]]], np.ndarray]:
    """The RLM as a cold-stream scorer (`models.cold_stream.ScoreFn`): each prediction's prompt
    is built from its own prefix. `words_from[u]` lends user u the profile of another user and
    the taste of that user's own first len(prefix) items; `prompts[u]` adds u's trigger tokens."""

    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        fields = []
        for u, history in zip(users, histories, strict=True):
            profile, taste = [], []
            if with_words:
                donor = words_from[u] if words_from is not None else u
                taste_from = history if donor == u else full_sequence(splits, donor)[: len(history)]
                profile, taste = profiles[donor], catalog.taste_words(taste_from)
            fields.append(PromptFields(history, profile, taste))
        user_prompts = [prompts.get(u, UserPrompt()) for u in users] if prompts else None
        return rlm_scores(lm, fields, template, user_prompts)

    return score

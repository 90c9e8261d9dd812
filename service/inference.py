"""What the gateway asks of the RLM: prompts for users, and one batched ranking call.

Everything here is synchronous and framework-free; the micro-batcher runs `Ranker.rank`
in a worker thread.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from models.data.splits import Splits
from models.prompts.rendering import DEFAULT_TEMPLATE, UserPrompt, render_prompt
from models.ranking import encode_token_lists, rank_items, top_items
from models.rlm.model import RecLM
from models.templates import TEMPLATES, PromptFields
from models.user_context import ItemCatalog, profile_words


@dataclass(frozen=True)
class Catalog:
    """The model's items (index k = token item_k) with their titles, and the taste words."""

    item_ids: list[str]
    titles: list[str]
    index_of: dict[str, int]
    words: ItemCatalog

    @classmethod
    def build(
        cls, item_ids: list[str], items: pd.DataFrame, interaction_counts: dict[str, int]
    ) -> Catalog:
        """`items`: item, title, genres for (some of) the model's items; `interaction_counts`:
        interactions per item id, for the catalogue's genre shares that taste words lift against."""
        no_users = Splits(list(item_ids), [], [], [], [], np.zeros(0, dtype=bool))
        words = ItemCatalog.build(items, no_users)
        counts: Counter[str] = Counter()
        index_of = {item: k for k, item in enumerate(item_ids)}
        for item, n in interaction_counts.items():
            k = index_of.get(item)
            if k is not None:
                for genre in words.genre_words[k]:
                    counts[genre] += n
        total = sum(counts.values()) or 1
        words = replace(words, genre_share={g: c / total for g, c in counts.items()})
        title_of = dict(zip(items["item"], items["title"], strict=True)) if len(items) else {}
        titles = [str(title_of.get(item) or "") for item in item_ids]
        return cls(list(item_ids), titles, index_of, words)


def user_profile(age: float | None, gender: str | None, occupation: str | None) -> list[str]:
    return profile_words(math.nan if age is None else age, gender or "", occupation or "")


def prompt_tokens(
    lm: RecLM,
    catalog: Catalog,
    task: str,
    history: Sequence[int],
    profile: list[str],
    prompt: UserPrompt,
    candidates: Sequence[int] = (),
) -> list[str]:
    """The served prompt: the task's template filled for the user, task tokens, personal tokens."""
    fields = PromptFields(
        history=list(history),
        profile=profile,
        taste=catalog.words.taste_words(list(history)),
        candidates=list(candidates) if task == "direct" else [],
    )
    return render_prompt(TEMPLATES[DEFAULT_TEMPLATE[task]], fields, prompt, lm.max_history)


@dataclass(frozen=True)
class RankRequest:
    tokens: list[str]
    count: int
    exclude: tuple[int, ...] = ()  # item indices not to recommend (repeats are harmless)
    candidates: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Ranked:
    items: list[int]
    scores: list[float]  # log-probabilities, descending


class Ranker:
    """One forward pass for a batch of prompts, top-k per row among the allowed items."""

    def __init__(self, lm: RecLM) -> None:
        self.lm = lm

    @torch.inference_mode()
    def rank(self, requests: Sequence[RankRequest]) -> list[Ranked]:
        """Runs in the batcher's thread: whole-batch tensor calls only (each one hands the GIL
        to the event loop and waits to get it back)."""
        ids, mask = encode_token_lists(self.lm, [r.tokens for r in requests])
        scores = rank_items(
            self.lm,
            ids,
            mask,
            exclude=[r.exclude for r in requests],
            candidates=[r.candidates for r in requests],
        )
        k = min(max(r.count for r in requests), scores.shape[1])
        indices, values = top_items(scores, k)
        indices, values = indices.cpu().tolist(), values.cpu().tolist()
        out = []
        for row, r in enumerate(requests):
            pairs = [
                (i, v) for i, v in zip(indices[row], values[row], strict=True) if math.isfinite(v)
            ][: r.count]
            out.append(Ranked([i for i, _ in pairs], [v for _, v in pairs]))
        return out

"""What the gateway asks of the RLM: prompts for users, and one batched ranking call.

Everything here is synchronous and framework-free; the micro-batcher runs `Ranker.rank`
in a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from promptrec.models.prompts.rendering import DEFAULT_TEMPLATE, UserPrompt, render_prompt
from promptrec.models.prompts.rpp.slots import choice_from_names, render_choice
from promptrec.models.ranking import encode_token_lists, rank_items, top_items
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, PromptFields
from promptrec.models.user_context import ItemCatalog


def prompt_tokens(
    lm: RecLM,
    catalog: ItemCatalog,
    task: str,
    history: Sequence[int],
    profile: list[str],
    prompt: UserPrompt,
    candidates: Sequence[int] = (),
    rpp_choice: dict[str, str] | None = None,
) -> list[str]:
    """The served prompt: the task's template filled for the user, task tokens, personal
    tokens; or, for a user whose version is an RPP choice ({slot: alternative}), the choice's
    template, history window and stated fields (no trigger tokens, as RPP scored it)."""
    fields = PromptFields(
        history=list(history),
        profile=profile,
        taste=catalog.taste_words(list(history)),
        candidates=list(candidates) if task == "direct" else [],
    )
    if rpp_choice is not None:
        return render_choice(choice_from_names(rpp_choice), fields, lm.max_history)
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
        top_indices, top_values = top_items(scores, k)
        indices, values = top_indices.cpu().tolist(), top_values.cpu().tolist()
        out = []
        for row, r in enumerate(requests):
            pairs = [
                (i, v) for i, v in zip(indices[row], values[row], strict=True) if math.isfinite(v)
            ][: r.count]
            out.append(Ranked([i for i, _ in pairs], [v for _, v in pairs]))
        return out

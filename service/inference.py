"""What the gateway asks of the RLM: prompts for users, and one batched ranking call.

Everything here is synchronous and framework-free; the micro-batcher runs `Ranker.rank`
in a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptrec.models.prompts.rendering import DEFAULT_TEMPLATE, UserPrompt, render_prompt
from promptrec.models.prompts.rpp.slots import choice_from_names, render_choice
from promptrec.models.ranking import SlotVectors, encode_token_lists, rank_items, top_items
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
    soft_template: str | None = None,
) -> list[str]:
    """The served prompt: the task's template filled for the user, task tokens, personal
    tokens; or, for a user whose version is an RPP choice ({slot: alternative}), the choice's
    template, history window and stated fields (no trigger tokens, as RPP scored it); or, for
    a soft version, the template its vectors were fitted on, filled (no trigger tokens: the
    vectors are added to its words, `SoftRow`)."""
    fields = PromptFields(
        history=list(history),
        profile=profile,
        taste=catalog.taste_words(list(history)),
        candidates=list(candidates) if task == "direct" else [],
    )
    if rpp_choice is not None:
        return render_choice(choice_from_names(rpp_choice), fields, lm.max_history)
    if soft_template is not None:
        return render_prompt(TEMPLATES[soft_template], fields, UserPrompt(), lm.max_history)
    return render_prompt(TEMPLATES[DEFAULT_TEMPLATE[task]], fields, prompt, lm.max_history)


@dataclass(frozen=True)
class SoftRow:
    """A soft prompt's k vectors, added to the input embeddings of the k prompt words right
    before the history: those at `history_at - k .. history_at - 1` of the encoded row (`<s>`
    at 0), as `models.prompts.soft.composer.encode_fields` places them."""

    vectors: np.ndarray  # [k, d_model] float32
    history_at: int


def soft_row(lm: RecLM, tokens: Sequence[str], n_history: int, vectors: np.ndarray) -> SoftRow:
    """Where the vectors of a soft prompt rendered as `tokens` go (`n_history`: the items of
    the user's history; the prompt shows at most `lm.max_history` of them, last)."""
    shown = min(n_history, lm.max_history, len(tokens))
    return SoftRow(vectors, 1 + len(tokens) - shown)


@dataclass(frozen=True)
class RankRequest:
    tokens: list[str]
    count: int
    exclude: tuple[int, ...] = ()  # item indices not to recommend (repeats are harmless)
    candidates: tuple[int, ...] | None = None
    soft: SoftRow | None = None  # a soft version's vectors, scored from input embeddings


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
        to the event loop and waits to get it back). A batch with any soft row is scored with
        its vectors added in the graph, all of it in the same call; one without, from token
        ids alone."""
        ids, mask = encode_token_lists(self.lm, [r.tokens for r in requests])
        rows = [r.soft for r in requests]
        scores = rank_items(
            self.lm,
            ids,
            mask,
            exclude=[r.exclude for r in requests],
            candidates=[r.candidates for r in requests],
            soft=slot_vectors(self.lm, rows) if any(r is not None for r in rows) else None,
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


def slot_vectors(lm: RecLM, rows: Sequence[SoftRow | None]) -> SlotVectors:
    """The batch's soft vectors and slots, built in numpy (one tensor each at the end): a row
    without gets zero vectors, its own prompt exactly. Vectors of fewer slots than the batch's
    most are padded with zeros in front (slots they leave as they are)."""
    k = max(r.vectors.shape[0] for r in rows if r is not None)
    vectors = np.zeros((len(rows), k, lm.model.config.n_embd), dtype=np.float32)
    history_at = np.full(len(rows), k, dtype=np.int64)  # rows without: any k valid slots
    for i, r in enumerate(rows):
        if r is not None:
            vectors[i, k - r.vectors.shape[0] :] = r.vectors
            history_at[i] = r.history_at
    return SlotVectors(
        torch.from_numpy(vectors).to(lm.device), torch.from_numpy(history_at).to(lm.device)
    )

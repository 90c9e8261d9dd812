"""Ranking with soft vectors in slot positions (how soft prompts are served): the traced graph
scores as the eager model with the vectors added to the input embeddings, zero vectors score as
the plain token ids, and tracing that fails keeps the eager model."""

from __future__ import annotations

import torch

from promptrec.models.ranking import (
    SlotVectors,
    encode_token_lists,
    item_scorer,
    rank_items,
    slot_scorer,
)
from promptrec.models.rlm.train import TrainConfig, build_rlm
from promptrec.models.templates import TEMPLATES, PromptFields, render_tokens


def _rows(lm, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ragged (padded) rows, and where each row's history begins."""
    fields = [PromptFields(list(range(row, row + 2 + 3 * row)), ["engineer"]) for row in range(n)]
    tokens = [render_tokens(TEMPLATES["seq-1"], f, lm.max_history) for f in fields]
    ids, mask = encode_token_lists(lm, tokens)
    history_at = torch.tensor(
        [1 + len(t) - len(f.history) for t, f in zip(tokens, fields, strict=True)]
    )
    return ids, mask, history_at


def test_the_traced_slot_graph_adds_the_vectors_where_the_eager_model_does(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()
    scorer = slot_scorer(lm)
    assert isinstance(scorer, torch.jit.ScriptModule)  # traced, not the eager fallback
    width = lm.model.config.n_embd
    with torch.inference_mode():
        for n, k in ((1, 4), (3, 8), (6, 2)):
            ids, mask, history_at = _rows(lm, n)
            zero = torch.zeros(n, k, width)
            torch.testing.assert_close(
                scorer(ids, mask, zero, history_at),
                item_scorer(lm)(ids, mask),
                atol=1e-5,
                rtol=1e-5,
            )
            vectors = torch.randn(n, k, width, generator=torch.Generator().manual_seed(n))
            embeds = lm.model.get_input_embeddings()(ids).clone()
            for row in range(n):  # the k positions right before the history, by hand
                at = int(history_at[row])
                embeds[row, at - k : at] += vectors[row]
            hidden = lm.model.last_hidden(inputs_embeds=embeds, attention_mask=mask)
            eager = lm.model.item_logits(hidden, lm.item_token_ids())
            moved = scorer(ids, mask, vectors, history_at)
            torch.testing.assert_close(moved, eager, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(moved, item_scorer(lm)(ids, mask), atol=1e-3)
        ids, mask, history_at = _rows(lm, 4)
        exclude = [[0, 1], [], [5], [2, 3]]
        torch.testing.assert_close(
            rank_items(
                lm, ids, mask, exclude, soft=SlotVectors(torch.zeros(4, 3, width), history_at)
            ),
            rank_items(lm, ids, mask, exclude),
            atol=1e-5,
            rtol=1e-5,
        )


def test_slot_ranking_falls_back_to_the_eager_model_when_tracing_fails(monkeypatch, data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()

    def refuse(*_args, **_kwargs):
        raise RuntimeError("this checkpoint cannot be traced")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    scorer = slot_scorer(lm)
    assert not isinstance(scorer, torch.jit.ScriptModule)
    ids, mask, history_at = _rows(lm, 3)
    with torch.inference_mode():
        zero = torch.zeros(3, 4, lm.model.config.n_embd)
        torch.testing.assert_close(scorer(ids, mask, zero, history_at), item_scorer(lm)(ids, mask))

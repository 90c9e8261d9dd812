"""Ranking from input embeddings (how soft prompts are scored): the traced graph scores as the
eager model, the plain prompt's embeddings score as its token ids, and tracing that fails keeps
the eager model."""

from __future__ import annotations

import torch

from promptrec.models.ranking import embeds_scorer, encode_token_lists, item_scorer, rank_items
from promptrec.models.rlm.train import TrainConfig, build_rlm
from promptrec.models.templates import TEMPLATES, PromptFields, render_tokens


def _rows(lm, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    fields = [PromptFields(list(range(row, row + 2 + 3 * row)), ["engineer"]) for row in range(n)]
    tokens = [render_tokens(TEMPLATES["seq-1"], f, lm.max_history) for f in fields]
    return encode_token_lists(lm, tokens)  # ragged: padded rows


def test_the_traced_embeds_graph_scores_as_the_eager_model_and_as_the_ids(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()
    scorer = embeds_scorer(lm)
    assert isinstance(scorer, torch.jit.ScriptModule)  # traced, not the eager fallback
    with torch.inference_mode():
        for n in (1, 3, 6):
            ids, mask = _rows(lm, n)
            embeds = lm.model.get_input_embeddings()(ids)
            # the plain prompt's own embeddings: the same scores as its ids
            torch.testing.assert_close(
                scorer(embeds, mask), item_scorer(lm)(ids, mask), atol=1e-5, rtol=1e-5
            )
            moved = embeds + torch.randn(embeds.shape, generator=torch.Generator().manual_seed(n))
            hidden = lm.model.last_hidden(inputs_embeds=moved, attention_mask=mask)
            eager = lm.model.item_logits(hidden, lm.item_token_ids())
            torch.testing.assert_close(scorer(moved, mask), eager, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(scorer(moved, mask), scorer(embeds, mask), atol=1e-3)
        ids, mask = _rows(lm, 4)
        embeds = lm.model.get_input_embeddings()(ids)
        exclude = [[0, 1], [], [5], [2, 3]]
        torch.testing.assert_close(
            rank_items(lm, ids, mask, exclude=exclude, inputs_embeds=embeds),
            rank_items(lm, ids, mask, exclude=exclude),
            atol=1e-5,
            rtol=1e-5,
        )


def test_embeds_ranking_falls_back_to_the_eager_model_when_tracing_fails(monkeypatch, data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()

    def refuse(*_args, **_kwargs):
        raise RuntimeError("this checkpoint cannot be traced")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    scorer = embeds_scorer(lm)
    assert not isinstance(scorer, torch.jit.ScriptModule)
    ids, mask = _rows(lm, 3)
    with torch.inference_mode():
        embeds = lm.model.get_input_embeddings()(ids)
        torch.testing.assert_close(scorer(embeds, mask), item_scorer(lm)(ids, mask))

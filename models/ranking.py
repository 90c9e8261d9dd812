"""Exact ranking of all items: one decoder step, scores read off the item-token slice."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.rlm.model import RecLM


def encode_token_lists(
    lm: RecLM, token_lists: Sequence[Sequence[str]], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad already-tokenised prompts (as `render_tokens` makes them) into id tensors.

    Equivalent to `lm.tokenizer(" ".join(tokens))` (a test pins that), without re-parsing text.
    """
    vocab = lm.vocab
    unk, eos = lm.tokenizer.unk_token_id, lm.tokenizer.eos_token_id
    rows = [[vocab.get(t, unk) for t in tokens] + [eos] for tokens in token_lists]
    return pad_rows(rows, lm.tokenizer.pad_token_id, device or lm.device)


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def item_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    item_token_ids: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of the first decoded token, restricted to item tokens: [batch, n_items]."""
    start = model.config.decoder_start_token_id
    decoder_input_ids = torch.full(
        (input_ids.shape[0], 1), start, dtype=torch.long, device=input_ids.device
    )
    out = model(
        input_ids=None if inputs_embeds is not None else input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        use_cache=False,
    )
    return out.logits[:, 0, :].index_select(1, item_token_ids.to(out.logits.device))


@torch.inference_mode()
def rank_items(
    lm: RecLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Item log-probabilities [batch, n_items]; excluded and non-candidate items get -inf.

    Column k is item index k, so a top-k over the result can only return known items.
    """
    logits = item_logits(lm.model, input_ids, attention_mask, lm.item_token_ids())
    scores = torch.log_softmax(logits.float(), dim=-1)
    if candidates is not None:
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, items in enumerate(candidates):
            allowed[row, list(items)] = True
        scores = scores.masked_fill(~allowed, float("-inf"))
    if exclude is not None:
        for row, items in enumerate(exclude):
            if items:
                scores[row, list(items)] = float("-inf")
    return scores


def top_items(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k item indices and their scores per row; never an excluded (-inf) item."""
    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1)
    return indices, values

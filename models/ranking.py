"""Exact ranking of all items: one forward pass, scores read off the item-token slice of the
last position (the prompt's last history item)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptrec.models.rlm.model import RecGPT, RecLM

log = logging.getLogger("promptrec.ranking")

Scorer = Callable[..., torch.Tensor]
"""A ranking graph: (input_ids, attention_mask[, vectors, history_at]) -> item logits."""


def encode_token_lists(
    lm: RecLM, token_lists: Sequence[Sequence[str]], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad already-tokenised prompts (as `render_tokens` makes them) into id tensors.

    Equivalent to `lm.tokenizer(" ".join(tokens))` (a test pins that), without re-parsing text.
    """
    vocab = lm.vocab
    unk = lm.tokenizer.unk_token_id
    rows = [bos_row(lm, [vocab.get(t, unk) for t in tokens]) for tokens in token_lists]
    return pad_rows(rows, lm.tokenizer.pad_token_id, device or lm.device)


def bos_row(lm: RecLM, ids: Sequence[int]) -> list[int]:
    """`<s>` then the prompt's ids; a prompt longer than the model's positions loses its first
    words (the history, last, is kept: it is what the model ranks from)."""
    keep = lm.max_positions - 1
    return [lm.tokenizer.bos_token_id, *(ids[-keep:] if len(ids) > keep else ids)]


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    # Filled in numpy, one tensor at the end: every torch call releases and re-takes the GIL,
    # which a serving thread next to a busy event loop waits for each time.
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def rows_per_call(device: torch.device) -> int:
    """Prompts per model call when a caller has many to score.

    On CPU, 64: a call's largest activation (64 prompts x ~50 tokens x d_ff floats, under
    20 MB for every preset) then stays below the malloc mmap threshold, so with
    `models.malloc_settings.retain_freed_memory` its memory is reused call after call instead of
    being mapped and page-faulted anew (512-prompt calls fault on every call:
    `bench/allocator.py`). A GPU wants large batches instead."""
    return 64 if device.type == "cpu" else 1024


def row_col_indices(
    per_row: Sequence[Sequence[int]], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """(row, column) index tensors of every listed item, for one indexed write over the batch."""
    rows = [row for row, items in enumerate(per_row) for _ in items]
    cols = [item for items in per_row for item in items]
    return (
        torch.tensor(rows, dtype=torch.long, device=device),
        torch.tensor(cols, dtype=torch.long, device=device),
    )


def item_logits(
    model: RecGPT,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    item_token_ids: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-item logits at each right-padded prompt's last position: [batch, n_items]."""
    final = model.last_hidden(
        input_ids=None if inputs_embeds is not None else input_ids,
        attention_mask=attention_mask,
        inputs_embeds=inputs_embeds,
    )
    return model.item_logits(final, item_token_ids.to(final.device))


class _ScorerModule(torch.nn.Module):
    item_token_ids: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, model: RecGPT, item_token_ids: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("item_token_ids", item_token_ids, persistent=False)


class _ItemScorer(_ScorerModule):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return item_logits(self.model, input_ids, attention_mask, self.item_token_ids)


def add_slot_vectors(
    embeds: torch.Tensor, history_at: torch.Tensor, vectors: torch.Tensor
) -> torch.Tensor:
    """`embeds` [B, L, d] with each row's vectors [B, k, d] added at its k positions right
    before `history_at` [B] (where its history items begin): soft prompts' slots."""
    k = vectors.shape[1]
    slots = history_at[:, None] - k + torch.arange(k, device=embeds.device)[None]
    index = slots[..., None].expand(-1, -1, embeds.shape[2])
    return embeds.scatter_add(1, index, vectors.to(embeds.dtype))


class _SlotScorer(_ScorerModule):
    """The same scores with vectors added to the input embeddings of slot positions (soft
    prompts), inside the graph: a serving thread makes one call, as for token ids (the few
    eager tensor calls this would otherwise take each wait for the GIL behind the event loop:
    a batch of 32 took 128 ms instead of 46 next to a busy Python thread)."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        vectors: torch.Tensor,
        history_at: torch.Tensor,
    ) -> torch.Tensor:
        embeds = add_slot_vectors(self.model.transformer.wte(input_ids), history_at, vectors)
        hidden = self.model.last_hidden(inputs_embeds=embeds, attention_mask=attention_mask)
        return self.model.item_logits(hidden, self.item_token_ids)


def _eager_scorer(lm: RecLM, kind: type[_ScorerModule] = _ItemScorer) -> _ScorerModule:
    return kind(lm.model, lm.item_token_ids().to(lm.device))


def _padded_example(lm: RecLM, batch: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 1000 + width)
    vocab = lm.model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, width), generator=generator)
    ids[:, 0] = lm.tokenizer.bos_token_id
    mask = torch.ones(batch, width, dtype=torch.long)
    for row in range(1, batch):  # ragged rows, so the trace records the padded (general) path
        ids[row, width - row :] = lm.tokenizer.pad_token_id
        mask[row, width - row :] = 0
    return ids.to(lm.device), mask.to(lm.device)


def _slot_example(lm: RecLM, batch: int, width: int) -> tuple[torch.Tensor, ...]:
    """The padded example with random vectors in random slots (k varies with the shape, so the
    check sees more than the traced k)."""
    ids, mask = _padded_example(lm, batch, width)
    generator = torch.Generator().manual_seed(batch * 1000 + width + 1)
    k = min(1 + (batch + width) % 8, width - 1)
    vectors = torch.randn(batch, k, lm.model.config.n_embd, generator=generator)
    lengths = mask.sum(1).cpu()
    history_at = torch.stack(
        [torch.randint(k, max(int(n), k + 1), (1,), generator=generator)[0] for n in lengths]
    )
    return ids, mask, vectors.to(lm.device), history_at.to(lm.device)


@torch.inference_mode()
def _trace_scorer(
    lm: RecLM,
    kind: type[_ScorerModule] = _ItemScorer,
    example: Callable[[RecLM, int, int], tuple[torch.Tensor, ...]] = _padded_example,
) -> Scorer:
    """The ranking forward as a TorchScript graph: it runs in C++ with the GIL released, so a
    serving process's event loop and the model no longer take turns on the interpreter (next
    to a busy Python thread an eager batch-8 call took 1.3 s instead of 12 ms), and it skips
    the Python of the module tree.
    Checked against the eager model on other shapes; any mismatch or tracing error keeps eager.
    """
    eager = _eager_scorer(lm, kind).eval()
    try:
        with warnings.catch_warnings():
            # deprecation and "might be incorrect" notes: the comparison below is the check
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(eager, example(lm, 4, 24), check_trace=False)
        for batch, width in ((1, 7), (5, 37), (3, lm.max_positions)):
            inputs = example(lm, batch, width)
            if not torch.allclose(traced(*inputs), eager(*inputs), atol=1e-4, rtol=1e-4):
                raise ValueError(f"traced scores differ from eager at batch {batch}x{width}")
    except Exception as error:  # an unusual checkpoint: rank with the eager model instead
        log.warning("ranking with the eager model, tracing failed: %s", error)
        return eager
    return traced


def item_scorer(lm: RecLM) -> Scorer:
    """(input_ids, attention_mask) -> item logits for inference, built once per model/device.

    The traced graph shares the model's weight tensors; it is only used in eval mode (a model
    in training gets the eager path, with dropout)."""
    if lm.model.training:
        return _eager_scorer(lm)
    key = (id(lm.model), lm.device)
    if lm._scorer is None or lm._scorer[0] != key:
        lm._scorer = (key, _trace_scorer(lm))
    return lm._scorer[1]


def slot_scorer(lm: RecLM) -> Scorer:
    """(input_ids, attention_mask, vectors, history_at) -> item logits for inference: the prompts
    with soft vectors added to their slots (`add_slot_vectors`), traced and checked as
    `item_scorer`."""
    if lm.model.training:
        return _eager_scorer(lm, _SlotScorer)
    key = (id(lm.model), lm.device)
    if lm._slot_scorer is None or lm._slot_scorer[0] != key:
        lm._slot_scorer = (key, _trace_scorer(lm, _SlotScorer, _slot_example))
    return lm._slot_scorer[1]


@dataclass(frozen=True)
class SlotVectors:
    """Soft vectors for a batch: [B, k, d] and each row's history start [B] (zero vectors for
    a row without: its plain prompt, exactly)."""

    vectors: torch.Tensor
    history_at: torch.Tensor


def target_ranks_and_logps(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of item `logits`: the target's 0-based rank (ties count against it) and its
    log-probability; what every prompt search scores a prompt on an example by."""
    at = logits.gather(1, targets[:, None])
    ranks = ((logits >= at).sum(1) - 1).cpu().numpy()
    return ranks, (at[:, 0] - torch.logsumexp(logits, dim=1)).cpu().numpy()


@torch.inference_mode()
def rank_items(
    lm: RecLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    exclude: Sequence[Sequence[int]] | None = None,
    candidates: Sequence[Sequence[int] | None] | None = None,
    soft: SlotVectors | None = None,
) -> torch.Tensor:
    """Item log-probabilities [batch, n_items]; excluded and non-candidate items get -inf.

    `candidates[row]` None: that row may get any item. Column k is item index k, so a top-k
    over the result can only return known items. With `soft`, its vectors are added to the
    rows' slots (soft prompts).
    """
    if soft is not None:
        logits = slot_scorer(lm)(input_ids, attention_mask, soft.vectors, soft.history_at)
    else:
        logits = item_scorer(lm)(input_ids, attention_mask)
    scores = torch.log_softmax(logits.float(), dim=-1)
    if candidates is not None and any(c is not None for c in candidates):
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        allowed[row_col_indices([c or () for c in candidates], scores.device)] = True
        allowed[[row for row, c in enumerate(candidates) if c is None]] = True
        scores = scores.masked_fill(~allowed, float("-inf"))
    if exclude is not None and any(exclude):
        scores[row_col_indices(exclude, scores.device)] = float("-inf")
    return scores


def top_items(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k item indices and their scores per row; never an excluded (-inf) item."""
    k = min(k, scores.shape[1])
    values, indices = torch.topk(scores, k, dim=1)
    return indices, values

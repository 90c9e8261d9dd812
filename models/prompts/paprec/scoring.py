"""What PAP-REC measures on a frozen RLM: selection examples encoded around the trigger tokens,
their exact surrogate and target log-probability, and the HotFlip candidates for a trigger.

Layout `[template words] T1..Tm P1..Pd [history]`. The surrogate of an example is computed by
exact ranking of all items from the last position (items the user has seen excluded); the
candidates for a trigger position are the top-k words of `grad . E^T`, where `grad` is the
gradient of the targets' log-likelihood w.r.t. that position's input embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from promptrec.models.metrics import metric
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import (
    bos_row,
    item_logits,
    item_scorer,
    pad_rows,
    row_col_indices,
    rows_per_call,
    target_ranks_and_logps,
)
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, render_parts
from promptrec.models.text import is_word

if TYPE_CHECKING:
    from promptrec.models.prompts.paprec.screening import Screen

Triggers = Callable[[int], list[int]]
"""Trigger token ids of example j of a batch."""


@dataclass
class ExampleBatch:
    """Selection examples prepared once: prompt ids around the triggers (the template's words
    before them, the history items after them), targets, items to exclude."""

    base: list[list[int]]
    history: list[list[int]]
    targets: np.ndarray
    exclude: list[list[int]]
    owner: np.ndarray
    screen: Screen | None = field(default=None, repr=False)
    """The seeded share of these examples that task candidates race on (built on first use by
    `screening.screen_for`)."""

    def rows(self, index: Sequence[int] | np.ndarray) -> ExampleBatch:
        return ExampleBatch(
            base=[self.base[j] for j in index],
            history=[self.history[j] for j in index],
            targets=self.targets[list(index)],
            exclude=[self.exclude[j] for j in index],
            owner=self.owner[list(index)],
        )


def triggers(batch: ExampleBatch, task: list[int], personal: np.ndarray) -> Triggers:
    """Trigger ids of example j: the task tokens, then its owner's personal tokens."""
    return lambda j: task + personal[batch.owner[j]].tolist()


class PromptScorer:
    """Encodes, scores and differentiates prompts of one frozen RLM (frozen here: no parameter
    needs a gradient, and the model is in eval mode)."""

    def __init__(self, lm: RecLM, config: PaprecConfig | None = None):
        config = config or PaprecConfig()
        self.lm, self.config = lm, config
        self.rows_per_call = config.batch_size or rows_per_call(lm.device)
        self.template = TEMPLATES[config.template]
        self.vocab = lm.vocab
        self.inverse = {i: t for t, i in self.vocab.items()}
        # Every id a trigger may take: the word vocabulary (no item, special or punctuation).
        words = sorted(i for t, i in self.vocab.items() if is_word(t))
        self.word_ids = torch.tensor(words, dtype=torch.long, device=lm.device)
        if config.init_token not in self.vocab:
            raise ValueError(f"init token {config.init_token!r} is not in the model's vocabulary")
        for p in lm.model.parameters():
            p.requires_grad_(False)
        lm.model.eval()

    # ---- encoding -------------------------------------------------------------------------
    def prepare(self, examples: SearchExamples, rows: Sequence[int]) -> ExampleBatch:
        """The examples `rows` of `examples`, rendered with the configured template."""
        unk = self.lm.tokenizer.unk_token_id
        parts = [render_parts(self.template, examples.fields[j], self.lm.max_history) for j in rows]
        return ExampleBatch(
            base=[[self.vocab.get(t, unk) for t in words] for words, _ in parts],
            history=[[self.vocab[t] for t in items] for _, items in parts],
            targets=np.array([examples.targets[j] for j in rows], dtype=np.int64),
            # Seen items are not ranked, except a target seen before (as the metrics do).
            exclude=[
                [i for i in examples.fields[j].history if i != examples.targets[j]] for j in rows
            ],
            owner=np.array([examples.owner[j] for j in rows], dtype=np.int64),
        )

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.vocab[t] for t in tokens]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.inverse[int(i)] for i in ids]

    def encode(
        self, batch: ExampleBatch, rows: range, triggers: Triggers
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids and attention mask of examples `rows`, `<s>` first."""
        encoded = [bos_row(self.lm, batch.base[j] + triggers(j) + batch.history[j]) for j in rows]
        return pad_rows(encoded, self.lm.tokenizer.pad_token_id, self.lm.device)

    def logits(
        self,
        batch: ExampleBatch,
        rows: range,
        ids: torch.Tensor,
        mask: torch.Tensor,
        embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Item logits of examples `rows` from their last position, seen items at -inf; through
        `embeds` (the eager model, differentiable) when given."""
        if embeds is None:  # a measurement: the traced inference graph, same scores, faster
            logits = item_scorer(self.lm)(ids, mask).float()
        else:  # a gradient: the eager model
            logits = item_logits(self.lm.model, ids, mask, self.lm.item_token_ids(), embeds)
            logits = logits.float()
        # rank only items the user has not seen
        logits[row_col_indices([batch.exclude[j] for j in rows], logits.device)] = float("-inf")
        return logits

    # ---- the two measurements ---------------------------------------------------------------
    @torch.no_grad()
    def example_scores(
        self, batch: ExampleBatch, triggers: Triggers, metrics: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per example: surrogate (sum of `metrics`, the task surrogate's by default) and
        target log-probability. Every scoring pass of a search is a call of this method."""
        metrics = metrics or self.config.metrics
        surrogate, logp = [], []
        for lo in range(0, len(batch.base), self.rows_per_call):
            rows = range(lo, min(lo + self.rows_per_call, len(batch.base)))
            logits = self.logits(batch, rows, *self.encode(batch, rows, triggers))
            targets = torch.as_tensor(batch.targets[lo : rows.stop], device=logits.device)
            ranks, logps = target_ranks_and_logps(logits, targets)
            total = np.zeros(len(ranks))
            for m in metrics:
                total = total + metric(m, ranks)
            surrogate.append(total)
            logp.append(logps)
        return np.concatenate(surrogate), np.concatenate(logp)

    def surrogates(
        self,
        batch: ExampleBatch,
        task: list[int],
        personal: np.ndarray,
        metrics: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Per-example surrogate of the task tokens followed by each owner's personal tokens."""
        return self.example_scores(batch, triggers(batch, task, personal), metrics)[0]

    def task_surrogate(self, batch: ExampleBatch, triggers: Triggers) -> float:
        """The acceptance metric of a task-level candidate: mean surrogate over the examples."""
        return float(self.example_scores(batch, triggers)[0].mean())

    def user_means(
        self, batch: ExampleBatch, task: list[int], personal: np.ndarray, n_users: int
    ) -> np.ndarray:
        """Per user: the mean personal surrogate over their examples in `batch` (0 for a user
        with none)."""
        scores = self.surrogates(batch, task, personal, self.config.personal_surrogate)
        counts = np.bincount(batch.owner, minlength=n_users).clip(min=1)
        return np.bincount(batch.owner, weights=scores, minlength=n_users) / counts

    def user_logp(
        self, batch: ExampleBatch, task: list[int], personal: np.ndarray, n_users: int
    ) -> np.ndarray:
        """Per user: the mean target log-probability over their examples in `batch`."""
        logp = self.example_scores(batch, triggers(batch, task, personal))[1]
        counts = np.bincount(batch.owner, minlength=n_users).clip(min=1)
        return np.bincount(batch.owner, weights=logp, minlength=n_users) / counts

    # ---- gradients and candidates -------------------------------------------------------------
    def trigger_gradients(
        self, batch: ExampleBatch, triggers: Triggers, position: int
    ) -> torch.Tensor:
        """d log p(target) / d (input embedding at trigger `position`), one row per example."""
        embedding = self.lm.model.get_input_embeddings()
        grads = []
        for lo in range(0, len(batch.base), self.rows_per_call):
            rows = range(lo, min(lo + self.rows_per_call, len(batch.base)))
            ids, mask = self.encode(batch, rows, triggers)
            embeds = embedding(ids).detach().requires_grad_(True)
            logits = self.logits(batch, rows, ids, mask, embeds)
            targets = torch.as_tensor(batch.targets[lo : rows.stop], device=logits.device)
            logp = torch.log_softmax(logits, dim=1).gather(1, targets[:, None])
            logp.sum().backward()
            # counted from the end: a prompt too long for the model loses its first words
            at = torch.tensor(
                [
                    int(mask[r].sum()) - len(batch.history[j]) - len(triggers(j)) + position
                    for r, j in enumerate(rows)
                ],
                device=logits.device,
            )
            grads.append(embeds.grad[torch.arange(len(rows)), at])
        return torch.cat(grads)

    def candidate_scores(self, grad: torch.Tensor) -> torch.Tensor:
        """First-order gain in log-likelihood of each word: grad . E^T over the word vocabulary."""
        words = self.lm.model.get_input_embeddings().weight[self.word_ids]
        return grad @ words.T

    def top_candidates(
        self, grad: torch.Tensor, current: Sequence[int], k: int | None = None
    ) -> torch.Tensor:
        """[rows, k] word ids (k: the task rounds' by default), best first, never the token
        already in place."""
        scores = self.candidate_scores(grad)
        current_t = torch.as_tensor(list(current), device=scores.device)
        scores[self.word_ids[None, :] == current_t[:, None]] = float("-inf")
        top = torch.topk(scores, k or self.config.candidates, dim=1).indices
        return self.word_ids[top]

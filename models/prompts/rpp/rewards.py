"""What RPP measures on a frozen RLM: a choice's metric on prediction examples, the rewards of
choices per user on their selection examples (memoized: the model is frozen, so a (user, choice)
pair always scores the same), and the user state the policy reads.

A selection example predicts one of the user's last few *training* items from the items before
it (`models.prompts.selection.build_examples`); validation and test items are never among them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from promptrec.models.metrics import metric
from promptrec.models.prompts.rpp.slots import DEFAULT_CHOICE, Choice, render_choice
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import (
    encode_token_lists,
    item_scorer,
    row_col_indices,
    target_ranks_and_logps,
)
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields

N_STATISTICS = 2
"""Simple statistics appended to the hidden state: log history length, and whether the whole
history fits the model's window."""


class ChoiceScorer:
    """Scores prompts of choices on examples by exact ranking of all items (seen items excluded
    except the target, as the metrics do)."""

    def __init__(self, lm: RecLM, metric_name: str, rows_per_call: int):
        self.lm, self.metric_name, self.rows_per_call = lm, metric_name, rows_per_call
        lm.model.eval()

    def _logits(self, fields: Sequence[PromptFields], choices: Sequence[Choice]) -> torch.Tensor:
        tokens = [
            render_choice(c, f, self.lm.max_history) for c, f in zip(choices, fields, strict=True)
        ]
        return item_scorer(self.lm)(*encode_token_lists(self.lm, tokens)).float()

    @torch.inference_mode()
    def item_scores(self, fields: Sequence[PromptFields], choices: Sequence[Choice]) -> np.ndarray:
        """[rows, n_items] item scores of `choices[j]`'s prompt for `fields[j]` (nothing
        excluded: the caller's metric excludes seen items)."""
        out = [
            self._logits(
                fields[lo : lo + self.rows_per_call], choices[lo : lo + self.rows_per_call]
            )
            .cpu()
            .numpy()
            for lo in range(0, len(fields), self.rows_per_call)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.lm.n_items), dtype=np.float32)

    @torch.inference_mode()
    def ranks(
        self, fields: Sequence[PromptFields], targets: Sequence[int], choices: Sequence[Choice]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the target's 0-based rank and log-probability under `choices[j]` on
        example j (seen items excluded except the target, as the metrics do)."""
        ranks, logps = [], []
        for lo in range(0, len(fields), self.rows_per_call):
            rows = range(lo, min(lo + self.rows_per_call, len(fields)))
            logits = self._logits([fields[j] for j in rows], [choices[j] for j in rows])
            seen = [[i for i in fields[j].history if i != targets[j]] for j in rows]
            logits[row_col_indices(seen, logits.device)] = float("-inf")
            target = torch.as_tensor([targets[j] for j in rows], device=logits.device)
            rank, logp = target_ranks_and_logps(logits, target)
            ranks.append(rank)
            logps.append(logp)
        if not ranks:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(ranks), np.concatenate(logps)

    def score(
        self, fields: Sequence[PromptFields], targets: Sequence[int], choices: Sequence[Choice]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the metric and the target's log-probability of `choices[j]` on example j."""
        ranks, logps = self.ranks(fields, targets, choices)
        return metric(self.metric_name, ranks), logps


Part = Literal["search", "held_out", "all"]
"""Which of a user's selection examples a reward averages: those the search may use, the
held-out ones that decide whether a refinement is kept, or all of them (policy training)."""


class RewardCache:
    """Per user of `examples`: the mean metric (and target log-probability) of a choice over a
    part of the user's selection examples; each (user, choice, example) is scored once."""

    def __init__(self, scorer: ChoiceScorer, examples: SearchExamples):
        self.scorer, self.examples = scorer, examples
        self.rows: dict[tuple[int, Part], list[int]] = {}
        for j, (u, held) in enumerate(zip(examples.owner, examples.held_out, strict=True)):
            self.rows.setdefault((u, "held_out" if held else "search"), []).append(j)
            self.rows.setdefault((u, "all"), []).append(j)
        self.memo: dict[tuple[int, Choice], tuple[float, float]] = {}
        """(example, choice) -> (metric, log-probability)"""
        self.passes = 0
        """Examples scored so far (the cost of the search, in model rows)."""

    def has_examples(self, user: int, part: Part = "search") -> bool:
        return bool(self.rows.get((user, part)))

    def rewards(
        self, users: Sequence[int], choices: Sequence[Choice], part: Part = "search"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean metric, mean log-probability) of `choices[i]` over user `users[i]`'s examples
        in `part` (0, 0 for a user with none); what is not scored yet is scored in one batched
        call."""
        todo = {
            (j, tuple(c)): None
            for u, c in zip(users, choices, strict=True)
            for j in self.rows.get((int(u), part), ())
            if (j, tuple(c)) not in self.memo
        }
        if todo:
            rows = list(todo)
            values, logps = self.scorer.score(
                [self.examples.fields[j] for j, _ in rows],
                [self.examples.targets[j] for j, _ in rows],
                [c for _, c in rows],
            )
            self.passes += len(rows)
            for key, v, lp in zip(rows, values.tolist(), logps.tolist(), strict=True):
                self.memo[key] = (v, lp)
        out = np.zeros((len(users), 2))
        for i, (u, c) in enumerate(zip(users, choices, strict=True)):
            rows_of = self.rows.get((int(u), part), ())
            if rows_of:
                out[i] = np.mean([self.memo[(j, tuple(c))] for j in rows_of], axis=0)
        return out[:, 0], out[:, 1]


@torch.inference_mode()
def user_states(lm: RecLM, fields: Sequence[PromptFields], rows_per_call: int) -> torch.Tensor:
    """[users, d_model + N_STATISTICS]: the RLM's last hidden state of each user's history under
    the plain served prompt (what it ranks from), then simple statistics of the history."""
    out = []
    for lo in range(0, len(fields), rows_per_call):
        rows = range(lo, min(lo + rows_per_call, len(fields)))
        tokens = [render_choice(DEFAULT_CHOICE, fields[j], lm.max_history) for j in rows]
        ids, mask = encode_token_lists(lm, tokens)
        hidden = lm.model.last_hidden(input_ids=ids, attention_mask=mask).float()
        lengths = torch.tensor([len(fields[j].history) for j in rows], dtype=torch.float32)
        stats = torch.stack(
            [
                torch.log1p(lengths) / np.log1p(lm.max_history),
                (lengths <= lm.max_history).float(),
            ],
            dim=1,
        )
        out.append(torch.cat([hidden.cpu(), stats], dim=1))
    if not out:
        return torch.zeros(0, lm.model.config.n_embd + N_STATISTICS)
    return torch.cat(out)

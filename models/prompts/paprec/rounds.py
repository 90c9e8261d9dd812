"""PAP-REC's rounds (DESIGN §4): one trigger position each, candidates from the gradient,
acceptance only on strict improvement of the surrogate.

A task round averages the gradient over all examples and accepts for everyone (screened by
`screening.race` when screening is on); a personal round averages it over each user's own
examples, and every user tries their own c-th candidate at once, keeping it only if it helps
them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.scoring import ExampleBatch, PromptScorer, Triggers, triggers
from promptrec.models.prompts.paprec.screening import race, remember_scores, screen_for
from promptrec.models.rlm.model import RecLM


class TriggerRounds:
    """The rounds over one frozen RLM; `PaprecSearch` drives them to convergence.

    Arrays are changed in place: `task` (ids), `personal` [users, d] ids, per-user `best`.
    """

    def __init__(self, lm: RecLM, config: PaprecConfig | None = None):
        self.scorer = PromptScorer(lm, config)
        self.lm, self.config = lm, self.scorer.config

    def task_surrogate(self, batch: ExampleBatch, triggers: Triggers) -> float:
        """What an unscreened task round and the final keep-or-drop check of the task tokens
        accept on (the scorer's exact mean surrogate); a subclass may measure otherwise
        (`bench/paprec_reference.py` does)."""
        return self.scorer.task_surrogate(batch, triggers)

    def measure(self, batch: ExampleBatch, task: list[int], personal: np.ndarray) -> float:
        """The current prompt's surrogate, its per-example scores kept for the race."""
        scores = self.scorer.surrogates(batch, task, personal)
        remember_scores(batch, self.config, task, personal, scores)
        return float(scores.mean())

    def task_round(
        self,
        batch: ExampleBatch,
        task: list[int],
        personal: np.ndarray,
        position: int,
        best: float,
    ) -> tuple[float, bool]:
        """Try the top-k words at task position `position`; keep the best if strictly better."""

        grad = self.scorer.trigger_gradients(batch, triggers(batch, task, personal), position).mean(
            0, keepdim=True
        )
        trials = [
            [*task[:position], word, *task[position + 1 :]]
            for word in self.scorer.top_candidates(grad, [task[position]])[0].tolist()
        ]
        best, chosen = self.accept_best(batch, task, trials, personal, best)
        if chosen is not None:
            task[:] = trials[chosen]
        return best, chosen is not None

    def accept_best(
        self,
        batch: ExampleBatch,
        current: list[int],
        trials: Sequence[list[int]],
        personal: np.ndarray,
        best: float,
    ) -> tuple[float, int | None]:
        """The trial task tokens with the highest surrogate on all of `batch`, if strictly above
        `best` (the surrogate of `current`); returns the new best and the trial's index or None.

        With screening on, trials race (`screening.race`): most long passes are saved, and
        acceptance stays exact (a trial's full surrogate, strictly above `best`).
        """
        screen = screen_for(batch, self.config)
        if screen is None:
            chosen = None
            for c, trial in enumerate(trials):
                score = self.task_surrogate(batch, triggers(batch, trial, personal))
                if score > best:
                    best, chosen = score, c
            return best, chosen
        return race(
            self.scorer, screen, current, trials, personal, best, self.config.screen_promote
        )

    def personal_round(
        self,
        batch: ExampleBatch,
        task: list[int],
        personal: np.ndarray,
        slot: int,
        best: np.ndarray,
    ) -> np.ndarray:
        """Every user tries their own c-th candidate at once; each keeps it only if it helps them.

        `personal` [users, d] and `best` [users] (per-user mean surrogate) are updated in place;
        returns which users accepted a new token. Users with no example in `batch` sit out.
        """

        n_users = len(best)
        grad = self.scorer.trigger_gradients(
            batch, triggers(batch, task, personal), len(task) + slot
        )
        per_user = torch.zeros((n_users, grad.shape[1]), device=grad.device)
        per_user.index_add_(0, torch.as_tensor(batch.owner, device=grad.device), grad)
        current = personal[:, slot].tolist()
        candidates = (
            self.scorer.top_candidates(per_user, current, self.config.personal_k).cpu().numpy()
        )
        counts = np.bincount(batch.owner, minlength=n_users)
        present, divisor = counts > 0, counts.clip(min=1)
        accepted = np.zeros(n_users, dtype=bool)
        for c in range(candidates.shape[1]):
            trial = personal.copy()
            trial[:, slot] = candidates[:, c]
            scores = self.scorer.surrogates(batch, task, trial, self.config.personal_surrogate)
            user_scores = np.bincount(batch.owner, weights=scores, minlength=n_users) / divisor
            better = present & (user_scores > best)
            personal[better, slot] = candidates[better, c]
            best[better] = user_scores[better]
            accepted |= better
        return accepted

    def untried_personal_round(
        self,
        batch: ExampleBatch,
        task: list[int],
        personal: np.ndarray,
        slot: int,
        best: np.ndarray,
        tried: np.ndarray,
    ) -> np.ndarray:
        """`personal_round` for the users who have not tried `slot` at their current prompt.

        Trying it again would propose the same candidates and score them the same (nothing of
        theirs changed), so those users sit out: the same outcome for fewer passes.
        `tried` [users, d] is kept up to date: set for the users tried here, cleared for every
        slot of a user who moved (their prompt changed). Returns who moved.
        """
        rows = np.flatnonzero(~tried[batch.owner, slot])
        if not len(rows):
            return np.zeros(len(best), dtype=bool)
        moved = self.personal_round(
            batch if len(rows) == len(batch.base) else batch.rows(rows), task, personal, slot, best
        )
        tried[batch.owner[rows], slot] = True
        tried[moved] = False
        return moved

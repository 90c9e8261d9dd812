"""PAP-REC prompt search on a frozen RLM (DESIGN §4), made fast and exact: the drivers.

`search_task` alternates task rounds with personal rounds until a full cycle brings nothing (or
the budget is spent), then keeps the task tokens only if they beat the plain template.
`search_personal` is the incremental mode the worker runs: task tokens frozen, personal tokens
searched for the given users, each kept only if it also helps on held-out interactions.
The rounds themselves are in `rounds.py`, what they measure in `scoring.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.rounds import TriggerRounds
from promptrec.models.prompts.paprec.scoring import ExampleBatch, triggers
from promptrec.models.prompts.paprec.state import PaprecState, UserOutcome
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.rlm.model import RecLM


class PaprecSearch(TriggerRounds):
    """PAP-REC over one frozen RLM: task-level search, incremental personal search, drift
    check."""

    def __init__(self, lm: RecLM, config: PaprecConfig | None = None, progress: bool = True):
        super().__init__(lm, config)
        self.progress = progress

    def search_task(
        self,
        examples: SearchExamples,
        state: PaprecState | None = None,
        on_round: Callable[[PaprecState], None] | None = None,
    ) -> PaprecState:
        """Task-level search alternating with personal rounds for the users in `examples`.

        Returns the state with task tokens; personal outcomes for these users are then decided
        by `search_personal` with the task tokens frozen.
        """
        cfg, scorer = self.config, self.scorer
        state = state or PaprecState(task_tokens=[cfg.init_token] * cfg.task_tokens)
        batch = scorer.prepare(examples, examples.subset(held_out=False))
        task = scorer.ids(state.task_tokens)
        personal = np.full((len(examples.users), cfg.personal_tokens), scorer.vocab[cfg.init_token])
        best = self.measure(batch, task, personal)
        user_best = scorer.user_means(batch, task, personal, len(examples.users))
        started, rounds_done = time.monotonic(), len(state.task_history)
        total = cfg.max_cycles * cfg.task_tokens
        bar = tqdm(
            total=total,
            initial=min(rounds_done, total),
            disable=not self.progress,
            desc="task search",
            unit="round",
        )
        tried = np.zeros((len(examples.users), cfg.personal_tokens), dtype=bool)
        quiet = 0
        for r in range(rounds_done, total):
            position = r % cfg.task_tokens
            best, accepted = self.task_round(batch, task, personal, position, best)
            if accepted:  # new task tokens: every user's prompt changed
                tried[:] = False
            moved = 0
            if cfg.personal_tokens:
                slot = position % cfg.personal_tokens
                moved = int(
                    self.untried_personal_round(batch, task, personal, slot, user_best, tried).sum()
                )
            if moved:  # personal tokens changed: the task surrogate is measured anew
                best = self.measure(batch, task, personal)
            state.task_tokens = scorer.tokens(task)
            state.task_history.append(
                {
                    "round": r,
                    "position": position,
                    "accepted": accepted,
                    "tokens": " ".join(state.task_tokens),
                    "surrogate": round(best, 5),
                    "users_moved": moved,
                }
            )
            bar.update(1)
            bar.set_postfix(surrogate=f"{best:.4f}")
            if on_round:
                on_round(state)
            quiet = 0 if (accepted or moved) else quiet + 1
            if quiet >= cfg.task_tokens:  # a full cycle brought nothing
                break
            if cfg.max_seconds and time.monotonic() - started > cfg.max_seconds:
                break
        bar.close()
        self._drop_useless_task_tokens(batch, state, len(examples.users))
        return state

    def _drop_useless_task_tokens(
        self, batch: ExampleBatch, state: PaprecState, n_users: int
    ) -> None:
        """Task tokens must earn their place: when the plain template scores at least as well
        on the same selection examples (filler words that no round replaced can hurt), the task
        keeps no tokens and personal tokens follow the template directly."""
        none = np.zeros((n_users, 0), dtype=np.int64)
        with_tokens = self.task_surrogate(
            batch, triggers(batch, self.scorer.ids(state.task_tokens), none)
        )
        plain = self.task_surrogate(batch, triggers(batch, [], none))
        kept = with_tokens > plain
        state.task_history.append(
            {
                "round": "final",
                "tokens": " ".join(state.task_tokens),
                "surrogate_with_tokens": round(with_tokens, 5),
                "surrogate_plain_template": round(plain, 5),
                "kept": kept,
            }
        )
        if not kept:
            state.task_tokens = []

    def search_personal(
        self, examples: SearchExamples, task_tokens: Sequence[str], max_cycles: int | None = None
    ) -> dict[str, UserOutcome]:
        """Incremental mode: task tokens frozen, personal tokens searched for these users only.

        A user keeps personal tokens only if they beat the task-level prompt twice: a strictly
        higher surrogate on the search examples and a higher target log-likelihood on the
        held-out examples (the search examples when a user has none held out). Nothing outside
        `examples` is read or changed.
        """
        cfg, scorer = self.config, self.scorer
        n_users = len(examples.users)
        task = scorer.ids(task_tokens)
        search = scorer.prepare(examples, examples.subset(held_out=False))
        held = scorer.prepare(examples, examples.subset(held_out=True))
        personal = np.full((n_users, cfg.personal_tokens), scorer.vocab[cfg.init_token])
        none = np.zeros((n_users, 0), dtype=np.int64)
        before = scorer.user_means(search, task, none, n_users)
        best = scorer.user_means(search, task, personal, n_users)
        tried = np.zeros((n_users, cfg.personal_tokens), dtype=bool)
        for _ in range(max_cycles or cfg.max_cycles):
            moved = [
                self.untried_personal_round(search, task, personal, slot, best, tried).any()
                for slot in range(cfg.personal_tokens)
            ]
            if not any(moved):
                break
        check = held if len(held.base) else search
        logp_before = scorer.user_logp(check, task, none, n_users)
        logp_after = scorer.user_logp(check, task, personal, n_users)
        has_check = np.bincount(check.owner, minlength=n_users) > 0
        outcomes = {}
        for u, user in enumerate(examples.users):
            # Kept only if the search itself found better words (strictly, on the user's search
            # examples) and they also help on the held-out interaction: the initial filler
            # words alone never count as a personal prompt.
            kept = bool(has_check[u] and best[u] > before[u] and logp_after[u] > logp_before[u])
            outcomes[user] = UserOutcome(
                tokens=scorer.tokens(personal[u]),
                surrogate_before=round(float(before[u]), 5),
                surrogate_after=round(float(best[u]), 5),
                held_out_logp_before=round(float(logp_before[u]), 5),
                held_out_logp_after=round(float(logp_after[u]), 5),
                kept=kept,
            )
        return outcomes

    def compare_personal(
        self,
        examples: SearchExamples,
        task_tokens: Sequence[str],
        personal_tokens: Sequence[Sequence[str]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Drift check: per user of `examples`, the mean surrogate over all their examples with
        the task-level prompt alone and with their personal tokens (`personal_tokens[u]`, all
        of one length)."""
        scorer = self.scorer
        n_users = len(examples.users)
        batch = scorer.prepare(examples, range(len(examples)))
        task = scorer.ids(task_tokens)
        personal = np.array([scorer.ids(p) for p in personal_tokens], dtype=np.int64)
        none = np.zeros((n_users, 0), dtype=np.int64)
        return (
            scorer.user_means(batch, task, none, n_users),
            scorer.user_means(batch, task, personal.reshape(n_users, -1), n_users),
        )

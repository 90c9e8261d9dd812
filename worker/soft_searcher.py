"""The worker's soft-prompt compute (synchronous, run in a thread; knows nothing of Redis or the
database): a new or drifting user's vectors are composed from their current history and fitted
on their own last items (`models.prompts.soft.fitting.fit_users`, batched, RLM and composer
frozen), and written as a version of strategy `soft`.

Drift: a drifting user's stored vectors are scored on their events since the search (mean
log-probability of each recent item from the history before it) against the composition from
the history before those events. That rival knows what the stored vectors knew, so the
comparison asks whether the fitted part still helps; composing from the whole current history
instead would show the rival the very items it is scored on. The stored vectors are kept while
they win; otherwise the user is fitted again from their current history.
"""

from __future__ import annotations

import numpy as np
import torch

from promptrec.core.db.tables import JobOutcome
from promptrec.core.queue import SearchTask
from promptrec.core.repositories.jobs import Outcome, WorkItem
from promptrec.core.repositories.prompts import SearchedPrompt
from promptrec.core.repositories.users import UserData
from promptrec.core.soft_composer import LoadedComposer
from promptrec.core.soft_versions import SoftVersion, soft_state
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.selection import earliest_fields
from promptrec.models.prompts.soft.composer import interest, mean_target_logp
from promptrec.models.prompts.soft.fitting import FitOutcome, fit_users
from promptrec.models.prompts.soft.state import vectors_to_bytes
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog
from promptrec.worker.outcomes import batch_outcomes
from promptrec.worker.searcher import (
    MAX_DRIFT_EVENTS,
    DriftCheck,
    current_fields,
    known_history,
    user_examples,
)

STRATEGY = StrategyName.SOFT
# Not final: another worker, or this one restarted with a composer, can still fit the user.
NO_COMPOSER = "this worker has no soft-prompt composer (PROMPTREC_SOFT_COMPOSER_PATH)"

Key = tuple[str, str]


class SoftSearcher:
    def __init__(self, lm: RecLM, catalog: ItemCatalog, loaded: LoadedComposer) -> None:
        self.lm, self.catalog, self.loaded = lm, catalog, loaded
        self.config = loaded.config

    def fit(self, users: list[UserData]) -> dict[str, FitOutcome]:
        """One batched fit of these users: composed from their current history, the fitted
        change kept where it wins on their held-out last items."""
        examples = user_examples(
            self.catalog, users, self.config.selection_per_user, self.config.held_out_per_user
        )
        current = [current_fields(self.catalog, u) for u in users]
        outcomes = fit_users(self.lm, self.loaded.composer, examples, current, self.config)
        return dict(zip(examples.users, outcomes, strict=True))

    def drift(self, users: list[UserData]) -> dict[str, DriftCheck]:
        """Stored vectors (`personal`) against the composition from the history before the
        recent events (`task_level`), on those events; a user whose version holds no soft
        vectors has nothing to defend (the check says fit)."""
        out = {u.user_id: DriftCheck(0.0, 0.0) for u in users}
        # One batched comparison per number of recent events, template and vector count.
        groups: dict[tuple[int, str, int], list[tuple[UserData, SoftVersion]]] = {}
        for u in users:
            if u.soft is not None:
                recent = min(max(1, u.events_since_search), MAX_DRIFT_EVENTS)
                key = (recent, u.soft.template, u.soft.vectors.shape[0])
                groups.setdefault(key, []).append((u, u.soft))
        for (recent, template, _k), group in groups.items():
            examples = user_examples(self.catalog, [u for u, _ in group], recent, 0)
            with torch.inference_mode():
                rival = self.loaded.composer(
                    interest(self.lm, earliest_fields(examples), self.config)
                )
            stored = torch.from_numpy(np.stack([soft.vectors for _, soft in group]))
            rows = (examples.fields, examples.targets, examples.owner)
            kept = mean_target_logp(self.lm, *rows, stored.to(self.lm.device), template)
            other = mean_target_logp(self.lm, *rows, rival, self.config.template)
            for i, (u, _) in enumerate(group):
                out[u.user_id] = DriftCheck(float(other[i]), float(kept[i]))
        return out


def searched_prompt(
    search: SearchTask, fingerprint: str, loaded: LoadedComposer, outcome: FitOutcome
) -> SearchedPrompt:
    """The version a fit writes: the vectors, and what they are in the state (shown by
    `GET /v1/users/{id}/prompt`); the held-out metrics in the version's metric columns."""
    return SearchedPrompt(
        user_id=search.user_id,
        task=search.task,
        fingerprint=fingerprint,
        tokens=[],
        metric_before=outcome.before,
        metric_after=outcome.after if outcome.kept else outcome.before,
        job_id=search.job_id,
        strategy=STRATEGY,
        state=soft_state(outcome, loaded.config, loaded.fingerprint),
        vectors=vectors_to_bytes(outcome.vectors),
    )


def soft_outcomes(
    searcher: SoftSearcher | None,
    fingerprint: str,
    batch: list[SearchTask],
    items: dict[Key, WorkItem],
    users: dict[str, UserData],
) -> tuple[list[Outcome], dict[Key, str], set[Key]]:
    """The soft fit of the batch's users (`batch_outcomes`): always written as a version (the
    composition alone is personal already)."""
    if searcher is None:
        return [], {s.key: NO_COMPOSER for s in batch}, set()
    return batch_outcomes(
        batch,
        items,
        users,
        lambda user: known_history(searcher.catalog, user),
        searcher.drift,
        searcher.fit,
        lambda search, outcome: Outcome(
            search,
            JobOutcome.PERSONALIZED,
            searched_prompt(search, fingerprint, searcher.loaded, outcome),
        ),
    )

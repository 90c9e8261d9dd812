"""The worker's RPP compute (synchronous, run in a thread; knows nothing of Redis or the
database): a new or drifting user gets the policy's choice from their current history (one
forward pass, model frozen), refined on their own selection items as `RppConfig` says, written
as a version of strategy `rpp`; a drifting user's stored choice is first scored on their recent
events against the policy's choice (the served prompt where the two agree), with RPP's rewards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from promptrec.core.db.tables import JobOutcome
from promptrec.core.queue import SearchTask
from promptrec.core.repositories.jobs import Outcome, WorkItem
from promptrec.core.repositories.prompts import SearchedPrompt
from promptrec.core.repositories.users import UserData
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.policy import RppPolicy
from promptrec.models.prompts.rpp.refinement import Refinement
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.slots import (
    DEFAULT_CHOICE,
    Choice,
    choice_from_names,
    choice_label,
    choice_names,
)
from promptrec.models.prompts.rpp.state import RppPromptSet
from promptrec.models.prompts.selection import SearchExamples, earliest_fields
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

log = logging.getLogger("promptrec.worker")

STRATEGY = StrategyName.RPP


@dataclass(frozen=True)
class RppResult:
    choice: Choice
    refinement: Refinement | None  # None: no selection item to refine on


class RppSearcher:
    def __init__(
        self,
        lm: RecLM,
        catalog: ItemCatalog,
        policy: RppPolicy | None = None,
        config: RppConfig | None = None,
    ) -> None:
        self.search = RppSearch(lm, config, progress=False)
        self.config, self.policy, self.catalog = self.search.config, policy, catalog

    @classmethod
    def from_file(cls, lm: RecLM, catalog: ItemCatalog, path: Path) -> RppSearcher:
        """The policy and settings of a choices file; without the file, or for a policy
        trained on another model, no policy (users start from the served prompt)."""
        if not Path(path).is_file():
            log.warning("no RPP choices file: no policy", extra={"path": str(path)})
            return cls(lm, catalog)
        prompt_set = RppPromptSet.load(path)
        if prompt_set.model_fingerprint != lm.fingerprint():
            log.warning(
                "the RPP policy was trained on another model: searching without it",
                extra={"path": str(path), "model": prompt_set.model_fingerprint},
            )
            return cls(lm, catalog, None, prompt_set.config)
        return cls(lm, catalog, prompt_set.state.policy, prompt_set.config)

    def _examples(self, users: list[UserData], per_user: int, held_out: int) -> SearchExamples:
        return user_examples(self.catalog, users, per_user, held_out)

    def drift(self, users: list[UserData]) -> dict[str, DriftCheck]:
        """The stored choice against the policy's choice from the history before the user's
        recent events (the served prompt where they agree) on those events; a user whose
        version is no RPP choice, or is both, has nothing to defend (the check says search)."""
        out = {u.user_id: DriftCheck(0.0, 0.0) for u in users}
        groups: dict[int, list[UserData]] = {}
        for u in users:
            if u.rpp_choice is not None:
                recent = min(max(1, u.events_since_search), MAX_DRIFT_EVENTS)
                groups.setdefault(recent, []).append(u)
        for recent, group in groups.items():
            examples = self._examples(group, recent, 0)
            policy = self.search.choose(self.policy, earliest_fields(examples))
            cache = self.search.cache(examples)
            stored = [choice_from_names(u.rpp_choice or {}) for u in group]
            rival = [p if p != s else DEFAULT_CHOICE for p, s in zip(policy, stored, strict=True)]
            index = list(range(len(group)))
            kept, _ = cache.rewards(index, stored)
            other, _ = cache.rewards(index, rival)
            for i, u in enumerate(group):
                if stored[i] != rival[i]:
                    out[u.user_id] = DriftCheck(float(other[i]), float(kept[i]))
        return out

    def choose(self, users: list[UserData]) -> dict[str, RppResult]:
        """One batched refinement for these users and the policy's choice from each one's
        current history; a kept refinement replaces the policy's choice."""
        examples = self._examples(
            users, self.config.selection_per_user, self.config.held_out_per_user
        )
        refined = self.search.refine(self.policy, examples)
        current = self.search.choose(self.policy, [current_fields(self.catalog, u) for u in users])
        out = {}
        for u, choice in zip(users, current, strict=True):
            r = refined.get(u.user_id)
            out[u.user_id] = RppResult(r.candidate if r is not None and r.kept else choice, r)
        return out


def searched_prompt(search: SearchTask, fingerprint: str, result: RppResult) -> SearchedPrompt:
    r = result.refinement
    metrics: dict = {"choice": choice_label(result.choice)}
    if r is not None:
        metrics |= {
            "policy_choice": choice_label(r.policy_choice),
            "candidate": choice_label(r.candidate),
            "kept": r.kept,
            "held_out_logp_before": r.held_out_logp_before,
            "held_out_logp_after": r.held_out_logp_after,
            "tried": r.tried,
        }
    return SearchedPrompt(
        user_id=search.user_id,
        task=search.task,
        fingerprint=fingerprint,
        tokens=[],
        metric_before=r.search_before if r is not None else None,
        metric_after=(r.search_after if r.kept else r.search_before) if r is not None else None,
        metrics=metrics,
        job_id=search.job_id,
        strategy=STRATEGY,
        state=choice_names(result.choice),
    )


def rpp_outcomes(
    searcher: RppSearcher,
    fingerprint: str,
    batch: list[SearchTask],
    items: dict[tuple[str, str], WorkItem],
    users: dict[str, UserData],
) -> tuple[list[Outcome], dict[tuple[str, str], str], set[tuple[str, str]]]:
    """The RPP choice of the batch's users (`batch_outcomes`): always written as a version."""
    return batch_outcomes(
        batch,
        items,
        users,
        lambda user: known_history(searcher.catalog, user),
        searcher.drift,
        searcher.choose,
        lambda search, result: Outcome(
            search, JobOutcome.PERSONALIZED, searched_prompt(search, fingerprint, result)
        ),
    )

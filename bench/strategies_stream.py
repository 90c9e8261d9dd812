"""The cold-stream side of `bench.strategies`: every strategy's prompt for every prediction of
every cold user, built only from what the user had done before that prediction.

- A fixed prompt: the same choice everywhere.
- RPP policy: the policy's choice from the prediction's own prefix (one forward pass each).
- Searches (PAP-REC personal tokens, RPP refinement) run at checkpoints, as the workers would:
  when a user reaches `first` events, then every `every` events, on selection examples from the
  prefix up to the checkpoint alone; a prediction uses the latest checkpoint at or before its
  own prefix (so never an item at or after its target). Before the first checkpoint PAP-REC
  serves its task-level prompt and RPP its policy's choice.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from promptrec.models.cold_stream import ColdStream, ScoreFn
from promptrec.models.evaluation import rlm_scores
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.rendering import UserPrompt
from promptrec.models.prompts.rpp.policy import RppPolicy
from promptrec.models.prompts.rpp.rewards import ChoiceScorer
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.slots import Choice
from promptrec.models.prompts.selection import SearchExamples, build_examples
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog

CHUNK = 128  # pseudo-users (user, checkpoint) searched per batched call


@dataclass(frozen=True)
class Checkpoints:
    first: int = 5
    """The first search once a user has this many events (the service's `new_user_events`)."""
    every: int = 10
    """Then again every this many events."""

    def of(self, length: int) -> list[int]:
        """Prefix lengths searched for a user with `length` events: those a later prediction
        (prefix at most length - 1) can use."""
        return list(range(self.first, length, self.every))


@dataclass
class ByCheckpoint:
    """Per user index: (checkpoint prefix lengths ascending, what was found there)."""

    found: dict[int, tuple[list[int], list[Any]]]

    def latest(self, user: int, prefix_len: int) -> Any | None:
        ts, values = self.found.get(user, ([], []))
        at = bisect.bisect_right(ts, prefix_len) - 1
        return values[at] if at >= 0 else None


def stream_fields(
    profiles: list[list[str]], catalog: ItemCatalog, users: list[int], histories: list[list[int]]
) -> list[PromptFields]:
    """A prediction's words, as `rlm_stream_scorer` states them: the profile, and the taste of
    the prefix."""
    return [
        PromptFields(h, profiles[u], catalog.taste_words(h))
        for u, h in zip(users, histories, strict=True)
    ]


def checkpoint_examples(
    stream: ColdStream,
    users: list[str],
    profiles: list[list[str]],
    catalog: ItemCatalog,
    checkpoints: Checkpoints,
    per_user: int,
    held_out: int,
) -> tuple[list[tuple[int, int]], SearchExamples]:
    """((user index, checkpoint) per pseudo-user, their selection examples): the last few
    items of the prefix up to the checkpoint, never a later one."""
    keys = [
        (int(u), t)
        for u, seq in zip(stream.users.tolist(), stream.sequences, strict=True)
        for t in checkpoints.of(len(seq))
    ]
    seqs = dict(zip(stream.users.tolist(), stream.sequences, strict=True))
    examples = build_examples(
        [f"{users[u]}@{t}" for u, t in keys],
        [list(seqs[u][:t]) for u, t in keys],
        [profiles[u] for u, _ in keys],
        catalog,
        per_user,
        held_out,
    )
    return keys, examples


def _subset(examples: SearchExamples, lo: int, hi: int) -> SearchExamples:
    rows = [j for j, o in enumerate(examples.owner) if lo <= o < hi]
    return SearchExamples(
        users=examples.users[lo:hi],
        owner=[examples.owner[j] - lo for j in rows],
        fields=[examples.fields[j] for j in rows],
        targets=[examples.targets[j] for j in rows],
        held_out=[examples.held_out[j] for j in rows],
    )


def search_checkpoints(
    keys: list[tuple[int, int]],
    examples: SearchExamples,
    search: Callable[[SearchExamples], dict[str, Any]],
) -> tuple[ByCheckpoint, float]:
    """`search` run on the pseudo-users in chunks; (what each found, seconds)."""
    started = time.perf_counter()
    found: dict[int, tuple[list[int], list[Any]]] = {}
    for lo in range(0, len(keys), CHUNK):
        chunk = _subset(examples, lo, min(lo + CHUNK, len(keys)))
        outcomes = search(chunk)
        for (u, t), name in zip(keys[lo : lo + CHUNK], chunk.users, strict=True):
            ts, values = found.setdefault(u, ([], []))
            ts.append(t)
            values.append(outcomes.get(name))
    return ByCheckpoint(found), time.perf_counter() - started


def fixed_scorer(
    scorer: ChoiceScorer, profiles: list[list[str]], catalog: ItemCatalog, choice: Choice
) -> ScoreFn:
    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        fields = stream_fields(profiles, catalog, users, histories)
        return scorer.item_scores(fields, [choice] * len(fields))

    return score


def rpp_scorer(
    search: RppSearch,
    policy: RppPolicy,
    profiles: list[list[str]],
    catalog: ItemCatalog,
    refined: ByCheckpoint | None = None,
) -> ScoreFn:
    """The latest kept refinement where there is one, else the policy's choice from the
    prediction's own prefix."""

    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        fields = stream_fields(profiles, catalog, users, histories)
        own: list[Choice | None] = [None] * len(fields)
        if refined is not None:
            for i, (u, h) in enumerate(zip(users, histories, strict=True)):
                outcome = refined.latest(u, len(h))
                own[i] = outcome.candidate if outcome is not None and outcome.kept else None
        need = [i for i, c in enumerate(own) if c is None]
        for i, c in zip(need, search.choose(policy, [fields[i] for i in need]), strict=True):
            own[i] = c
        return search.scorer.item_scores(fields, [c for c in own if c is not None])

    return score


def paprec_scorer(
    lm: RecLM,
    profiles: list[list[str]],
    catalog: ItemCatalog,
    template: str,
    task_tokens: list[str],
    personal: ByCheckpoint,
) -> ScoreFn:
    """The task tokens, and the personal tokens of the latest checkpoint that kept any."""

    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        fields = stream_fields(profiles, catalog, users, histories)
        prompts = []
        for u, h in zip(users, histories, strict=True):
            outcome = personal.latest(u, len(h))
            tokens = tuple(outcome.tokens) if outcome is not None and outcome.kept else ()
            prompts.append(UserPrompt(tuple(task_tokens), tokens))
        return rlm_scores(lm, fields, template, prompts)

    return score


def paprec_checkpoint_search(search: PaprecSearch, task_tokens: list[str]):
    return lambda examples: search.search_personal(examples, task_tokens)

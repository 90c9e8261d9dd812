"""The contract every prompt strategy keeps, so that what is shared (storing a user's prompt as a
versioned row, caching it, drift checks, admin re-search, rollback, serving) is written once and
works for any way of finding prompts.

A strategy holds opaque *state* for a task and for each of its users (discrete trigger tokens,
learned vectors or sentence choices, say). It searches that state for a given set of users in one
batched call, and it encodes a batch of filled prompts from it, as token ids or as input
embeddings, which is all the frozen RLM needs to score them. A strategy is bound to one RLM when
it is built (it may derive things from it once: a word vocabulary, embedding sizes) and is built
by name through `models.prompts.registry`, since which strategy serves a task is a setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields

State = TypeVar("State")


@dataclass
class PromptBatch:
    """Encoder input for a batch: ids, or embeddings when a strategy works in vector space."""

    attention_mask: torch.Tensor
    input_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None


@runtime_checkable
class PromptStrategy(Protocol[State]):
    name: str
    """The registry key, also recorded with every stored state."""

    def initial_state(self) -> State:
        """The state before any search: what every user is served until searched."""
        ...

    def search(self, examples: SearchExamples, state: State) -> State:
        """A new state in which the users of `examples` are searched, batched (the task-level
        part first, if `state` has none yet). `state` itself is not changed, and no other
        user's part of the new state differs from it."""
        ...

    def encode(
        self, state: State, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> PromptBatch:
        """Filled prompts for `users` (their own state where they have one, the task-level
        state otherwise), ready for the RLM."""
        ...


class StrategyFactory(Protocol):
    """Builds a strategy on one RLM; `config` is the strategy's own settings (None: defaults)."""

    def __call__(self, lm: RecLM, config: Any = None) -> PromptStrategy: ...

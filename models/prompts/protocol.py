"""The contract every prompt strategy keeps (PAP-REC now; soft prompts and RPP later).

A strategy holds some per-task and per-user *state* (discrete tokens for PAP-REC, vectors for
soft prompts, sentence choices for RPP). It can search that state for a set of users, and it can
encode a batch of filled prompts from it, as token ids or as input embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

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


class PromptStrategy(Protocol[State]):
    name: str

    def initial_state(self, lm: RecLM) -> State: ...

    def search(self, lm: RecLM, examples: SearchExamples, state: State) -> State:
        """Improve `state` for the users in `examples`; other users' state is left as it was."""
        ...

    def encode(
        self, lm: RecLM, state: State, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> PromptBatch:
        """Filled prompts for `users` (their own state where they have one)."""
        ...

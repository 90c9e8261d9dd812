"""Soft prompts behind `PromptStrategy`: per-user vectors composed from a shared pool and
fitted per user, entering the frozen RLM as input embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.protocol import PromptBatch
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.prompts.soft.composer import encode_fields, served_vectors, splice
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import fit_users
from promptrec.models.prompts.soft.state import SoftState
from promptrec.models.prompts.soft.training import Validation, tune_composer
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields


def latest_fields(examples: SearchExamples) -> list[PromptFields]:
    """Per user: their history through their last selection item, with the words of their
    latest example (examples hold no catalogue to restate the taste; callers that have one, the
    worker and the CLI, pass `fit_users` the exact current fields instead)."""
    out = []
    for js in examples.by_user():
        if not js:
            out.append(PromptFields([]))
            continue
        f = examples.fields[js[-1]]
        out.append(PromptFields([*f.history, examples.targets[js[-1]]], f.profile, f.taste))
    return out


class SoftStrategy:
    name: str = StrategyName.SOFT

    def __init__(self, lm: RecLM, config: SoftConfig | None = None, progress: bool = False):
        self.lm, self.config, self.progress = lm, config or SoftConfig(), progress

    def initial_state(self) -> SoftState:
        """No composer yet: every user is served the plain prompt."""
        return SoftState()

    def search(self, examples: SearchExamples, state: SoftState) -> SoftState:
        """The composer tuned on `examples` (their held-out examples choose the epoch) if
        `state` has none yet, then these users fitted; `state` itself is not changed."""
        state = state.copy()
        if state.composer is None:
            held = examples.subset(held_out=True)
            validation = Validation(
                [examples.fields[j] for j in held], [examples.targets[j] for j in held]
            )
            state.composer, log = tune_composer(
                self.lm, examples, validation, self.config, progress=self.progress
            )
            state.training = log.as_dict()
        outcomes = fit_users(
            self.lm, state.composer, examples, latest_fields(examples), self.config
        )
        state.apply(dict(zip(examples.users, outcomes, strict=True)))
        return state

    def vectors(
        self, state: SoftState, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> torch.Tensor | None:
        """[B, k, d]: each user's stored vectors, else the composition from `fields` (one
        batched pass for all such users); None while there is no composer."""
        if state.composer is None:
            return None
        stored = [state.outcomes[u].vectors if u in state.outcomes else None for u in users]
        return served_vectors(self.lm, state.composer, self.config, fields, stored)

    def encode(
        self, state: SoftState, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> PromptBatch:
        encoded = encode_fields(self.lm, fields, self.config.template)
        embeds, mask = splice(self.lm, encoded, self.vectors(state, users, fields))
        return PromptBatch(attention_mask=mask, inputs_embeds=embeds)

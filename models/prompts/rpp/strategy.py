"""RPP behind `PromptStrategy`: per-user sentence choices per slot, picked by actor-critic
agents from the user's state and refined per user."""

from __future__ import annotations

from collections.abc import Sequence

from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.protocol import PromptBatch
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.slots import Choice, render_choice
from promptrec.models.prompts.rpp.state import RppState
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import encode_token_lists
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields


class RppStrategy:
    name: str = StrategyName.RPP

    def __init__(self, lm: RecLM, config: RppConfig | None = None, progress: bool = False):
        self.rpp = RppSearch(lm, config, progress=progress)
        self.lm, self.config = lm, self.rpp.config

    def initial_state(self) -> RppState:
        """No policy yet: every user is served the plain served prompt."""
        return RppState()

    def search(self, examples: SearchExamples, state: RppState) -> RppState:
        """The policy trained on `examples` if `state` has none yet, then these users refined
        from the policy's choice (with `refine_episodes` 0 only their policy choice and its
        metrics are recorded); `state` itself is not changed."""
        state = state.copy()
        cache = self.rpp.cache(examples)
        if state.policy is None:
            state.policy, log = self.rpp.train(examples, cache)
            state.training = log.as_dict()
        state.apply(self.rpp.refine(state.policy, examples, cache))
        return state

    def choices(
        self, state: RppState, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> list[Choice]:
        """Each user's served choice: their kept refined one, else the policy's from `fields`
        (one batched forward pass for all such users)."""
        own = [state.refined_choice(u) for u in users]
        need = [i for i, c in enumerate(own) if c is None]
        picked = self.rpp.choose(state.policy, [fields[i] for i in need]) if need else []
        out = list(own)
        for i, c in zip(need, picked, strict=True):
            out[i] = c
        return [c for c in out if c is not None]

    def encode(
        self, state: RppState, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> PromptBatch:
        choices = self.choices(state, users, fields)
        tokens = [
            render_choice(c, f, self.lm.max_history) for c, f in zip(choices, fields, strict=True)
        ]
        ids, mask = encode_token_lists(self.lm, tokens)
        return PromptBatch(attention_mask=mask, input_ids=ids)

"""PAP-REC behind `PromptStrategy`: discrete task-level and personal trigger tokens."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PaprecState
from promptrec.models.prompts.protocol import PromptBatch
from promptrec.models.prompts.rendering import render_prompt
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import encode_token_lists
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields


class PaprecStrategy:
    name: str = StrategyName.PAPREC

    def __init__(self, lm: RecLM, config: PaprecConfig | None = None, progress: bool = False):
        self.paprec = PaprecSearch(lm, config, progress=progress)
        self.lm, self.config = lm, self.paprec.config

    def initial_state(self) -> PaprecState:
        return PaprecState(task_tokens=[self.config.init_token] * self.config.task_tokens)

    def search(self, examples: SearchExamples, state: PaprecState) -> PaprecState:
        """Task tokens searched on `examples` if `state`'s are not final yet, then the personal
        tokens of these users with the task tokens frozen (`PaprecSearch.search_personal`)."""
        state = copy.deepcopy(state)
        if not state.task_complete:
            self.paprec.search_task(examples, state)
            state.task_complete = True
        state.apply(self.paprec.search_personal(examples, state.task_tokens))
        return state

    def encode(
        self, state: PaprecState, users: Sequence[str], fields: Sequence[PromptFields]
    ) -> PromptBatch:
        tokens = [
            render_prompt(
                self.paprec.scorer.template, f, state.prompt_for(user), self.lm.max_history
            )
            for user, f in zip(users, fields, strict=True)
        ]
        ids, mask = encode_token_lists(self.lm, tokens)
        return PromptBatch(attention_mask=mask, input_ids=ids)

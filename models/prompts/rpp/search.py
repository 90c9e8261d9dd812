"""RPP on a frozen RLM: train the policy on users' selection examples, choose for users in one
forward pass, and refine users' choices on their own selection examples (incremental mode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.policy import RppPolicy, TrainingLog, train_policy
from promptrec.models.prompts.rpp.refinement import Refinement, refine
from promptrec.models.prompts.rpp.rewards import (
    ChoiceScorer,
    RewardCache,
    user_states,
)
from promptrec.models.prompts.rpp.slots import DEFAULT_CHOICE, SLOTS, Choice
from promptrec.models.prompts.selection import SearchExamples, earliest_fields
from promptrec.models.ranking import rows_per_call
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields


class RppSearch:
    def __init__(self, lm: RecLM, config: RppConfig | None = None, progress: bool = False):
        self.lm, self.config, self.progress = lm, config or RppConfig(), progress
        self.rows_per_call = self.config.batch_size or rows_per_call(lm.device)
        self.scorer = ChoiceScorer(lm, self.config.reward_metric, self.rows_per_call)

    def cache(self, examples: SearchExamples) -> RewardCache:
        return RewardCache(self.scorer, examples)

    def states(self, fields: Sequence[PromptFields]) -> torch.Tensor:
        return user_states(self.lm, fields, self.rows_per_call)

    def choose(self, policy: RppPolicy | None, fields: Sequence[PromptFields]) -> list[Choice]:
        """The policy's choice for each user from their prompt fields: one forward pass of the
        RLM and of the agents (the served prompt while there is no policy)."""
        if policy is None:
            return [DEFAULT_CHOICE] * len(fields)
        return policy.choose(self.states(fields))

    def train(
        self, examples: SearchExamples, cache: RewardCache | None = None
    ) -> tuple[RppPolicy, TrainingLog]:
        """The policy trained on the users of `examples`: a user's reward is the metric of the
        sampled choice on all their selection examples minus that of the served prompt."""
        cache = cache or self.cache(examples)
        users = [u for u in range(len(examples.users)) if cache.has_examples(u, "all")]
        if not users:
            raise ValueError("no user has a selection example to train the RPP policy on")
        baseline, _ = cache.rewards(users, [DEFAULT_CHOICE] * len(users), "all")

        def reward(batch: np.ndarray, choices: list[Choice]) -> np.ndarray:
            values, _ = cache.rewards([users[i] for i in batch], choices, "all")
            return values - baseline[batch]

        fields = earliest_fields(examples)
        states = self.states([fields[u] for u in users])
        return train_policy(states, reward, self.config, self.progress)

    def refine(
        self, policy: RppPolicy | None, examples: SearchExamples, cache: RewardCache | None = None
    ) -> dict[str, Refinement]:
        """Every user of `examples` with search examples, refined together from the policy's
        choice at their earliest selection example; nothing outside `examples` is read."""
        cache = cache or self.cache(examples)
        users = [u for u in range(len(examples.users)) if cache.has_examples(u, "search")]
        if not users:
            return {}
        fields = earliest_fields(examples)
        if policy is None:
            logits = [np.zeros((len(users), len(s.alternatives))) for s in SLOTS]
            choices = [DEFAULT_CHOICE] * len(users)
        else:
            states = self.states([fields[u] for u in users])
            logits = [lg.numpy() for lg in policy.logits(states)]
            choices = policy.choose(states)
        outcomes = refine(cache, users, logits, choices, self.config)
        return {examples.users[u]: o for u, o in zip(users, outcomes, strict=True)}

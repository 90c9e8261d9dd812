"""A whole RPP run over a dataset: the policy trained on warm users' selection examples, then
every chosen user refined (incremental mode, batched), saved after every step so that an
interrupted run resumes where it stopped."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptrec.models.data.splits import Splits
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.state import RppPromptSet, RppState
from promptrec.models.prompts.runs import resumed, search_in_chunks
from promptrec.models.prompts.selection import training_examples, users_to_search
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog

REFINE_CHUNK = 256


def policy_users(splits: Splits, config: RppConfig) -> np.ndarray:
    """The warm users the policy is trained on (a seeded sample when `train_users` is set)."""
    warm = splits.user_indices("warm")
    if config.train_users is None or config.train_users >= len(warm):
        return warm
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(warm, size=config.train_users, replace=False))


def run_rpp_search(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    out: Path,
    config: RppConfig | None = None,
    task: str = "sequential",
    personal_users: str = "all",
    resume: bool = True,
    progress: bool = True,
) -> RppPromptSet:
    config = config or RppConfig()
    fingerprint = lm.fingerprint()
    fresh = RppPromptSet(task, config, RppState(), fingerprint)
    prompt_set = resumed(out, resume, fresh, RppPromptSet.load)
    search = RppSearch(lm, config, progress=progress)
    if prompt_set.state.policy is None:
        started = time.perf_counter()
        examples = training_examples(
            splits, policy_users(splits, config), profiles, catalog, config
        )
        cache = search.cache(examples)
        policy, log = search.train(examples, cache)
        prompt_set.state.policy = policy
        prompt_set.state.training = {
            **log.as_dict(),
            "total_seconds": round(time.perf_counter() - started, 2),
            "examples_scored": cache.passes,
        }
        prompt_set.save(out)

    def refine(chunk: Sequence[int]) -> None:
        examples = training_examples(splits, chunk, profiles, catalog, config)
        prompt_set.state.apply(search.refine(prompt_set.state.policy, examples))

    search_in_chunks(
        users_to_search(splits, personal_users, prompt_set.state.outcomes),
        REFINE_CHUNK,
        refine,
        lambda: prompt_set.save(out),
        "RPP refinement",
        progress,
    )
    prompt_set.save(out)
    return prompt_set

"""A whole RPP run over a dataset: the policy trained on warm users' selection examples, then
every chosen user refined (incremental mode, batched), saved after every step so that an
interrupted run resumes where it stopped."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from promptrec.models.data.splits import Splits
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.state import RppPromptSet, RppState
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
    prompt_set = RppPromptSet(task, config, RppState(), fingerprint)
    if resume and out.is_file():
        previous = RppPromptSet.load(out)
        if previous.model_fingerprint != fingerprint or asdict(previous.config) != asdict(config):
            raise ValueError(
                f"{out} was searched with another model or config; remove it or pass another --out"
            )
        prompt_set = previous
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

    pending = users_to_search(splits, personal_users, prompt_set.state.outcomes)
    bar = tqdm(total=len(pending), disable=not progress, desc="RPP refinement", unit="user")
    for lo in range(0, len(pending), REFINE_CHUNK):
        chunk = pending[lo : lo + REFINE_CHUNK]
        examples = training_examples(splits, chunk, profiles, catalog, config)
        prompt_set.state.apply(search.refine(prompt_set.state.policy, examples))
        prompt_set.save(out)
        bar.update(len(chunk))
    bar.close()
    prompt_set.save(out)
    return prompt_set

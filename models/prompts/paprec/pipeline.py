"""A whole PAP-REC run over a dataset: task-level search on warm users, then personal tokens
for every user (incremental mode, batched), saved as a prompt set file after every step so an
interrupted run resumes where it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from promptrec.models.data.splits import Splits
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet
from promptrec.models.prompts.runs import resumed, search_in_chunks
from promptrec.models.prompts.selection import training_examples, users_to_search
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog

PERSONAL_CHUNK = 128


def run_search(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    out: Path,
    config: PaprecConfig | None = None,
    task: str = "sequential",
    personal_users: str = "all",
    resume: bool = True,
    progress: bool = True,
) -> PromptSet:
    config = config or PaprecConfig()
    search = PaprecSearch(lm, config, progress=progress)
    fingerprint = lm.fingerprint()
    fresh = PromptSet(
        task, config, PaprecState([config.init_token] * config.task_tokens), fingerprint
    )
    prompt_set = resumed(out, resume, fresh, PromptSet.load)

    def examples_for(users: np.ndarray):
        return training_examples(splits, users, profiles, catalog, config)

    rng = np.random.default_rng(config.seed)
    warm = splits.user_indices("warm")
    task_users = np.sort(rng.choice(warm, size=min(config.task_users, len(warm)), replace=False))
    if not prompt_set.state.task_complete:
        search.search_task(
            examples_for(task_users), prompt_set.state, on_round=lambda _: prompt_set.save(out)
        )
        prompt_set.state.task_complete = True
        prompt_set.save(out)

    def search_personal(chunk: Sequence[int]) -> None:
        examples = examples_for(np.array(chunk))
        prompt_set.state.apply(search.search_personal(examples, prompt_set.state.task_tokens))

    search_in_chunks(
        users_to_search(splits, personal_users, prompt_set.state.outcomes),
        PERSONAL_CHUNK,
        search_personal,
        lambda: prompt_set.save(out),
        "personal search",
        progress,
    )
    prompt_set.save(out)
    return prompt_set

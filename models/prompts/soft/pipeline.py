"""A whole soft-prompt run over a dataset: the composer tuned on warm users' training
predictions (the epoch chosen on every user's validation item), then every chosen user fitted
(incremental mode, batched), saved after every step so that an interrupted run resumes where it
stopped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import user_fields
from promptrec.models.prompts.runs import resumed, search_in_chunks
from promptrec.models.prompts.selection import training_examples, users_to_search
from promptrec.models.prompts.soft.composer import SoftComposer
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import fit_users
from promptrec.models.prompts.soft.state import SoftPromptSet, SoftState
from promptrec.models.prompts.soft.training import TuningLog, Validation, tune_composer
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog

FIT_CHUNK = 256


class _TuningSelection:
    """Selection settings of the composer's data: recent predictions, none held out (the
    validation items choose the epoch)."""

    def __init__(self, config: SoftConfig) -> None:
        self.selection_per_user, self.held_out_per_user = config.tune_history, 0


def tune_on_splits(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    config: SoftConfig,
    progress: bool = True,
) -> tuple[SoftComposer, TuningLog]:
    """The composer tuned on the warm users' recent training predictions, the epoch chosen on
    every user's validation item (from their training history, with its words)."""
    warm = splits.user_indices("warm")
    examples = training_examples(splits, warm, profiles, catalog, _TuningSelection(config))
    users = range(len(splits.users))
    fields = user_fields(splits, catalog, profiles, users, "valid")
    validation = Validation(fields, [splits.target(u, "valid") for u in users])
    return tune_composer(lm, examples, validation, config, progress=progress)


def run_soft_search(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    out: Path,
    config: SoftConfig | None = None,
    task: str = "sequential",
    personal_users: str = "all",
    resume: bool = True,
    progress: bool = True,
) -> SoftPromptSet:
    config = config or SoftConfig()
    fingerprint = lm.fingerprint()
    fresh = SoftPromptSet(task, config, SoftState(), fingerprint)
    prompt_set = resumed(out, resume, fresh, SoftPromptSet.load)
    if prompt_set.state.composer is None:
        tuned, log = tune_on_splits(lm, splits, catalog, profiles, config, progress)
        prompt_set.state = replace(prompt_set.state, composer=tuned, training=log.as_dict())
        prompt_set.save(out)

    composer = prompt_set.state.composer
    assert composer is not None

    def fit(chunk: Sequence[int]) -> None:
        examples = training_examples(splits, chunk, profiles, catalog, config)
        current = user_fields(splits, catalog, profiles, chunk, "valid")
        outcomes = fit_users(lm, composer, examples, current, config)
        prompt_set.state.apply(dict(zip(examples.users, outcomes, strict=True)))

    search_in_chunks(
        users_to_search(splits, personal_users, prompt_set.state.outcomes),
        FIT_CHUNK,
        fit,
        lambda: prompt_set.save(out),
        "soft prompt fit",
        progress,
    )
    prompt_set.save(out)
    return prompt_set

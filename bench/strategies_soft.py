"""The soft-prompt side of `bench.strategies` (#19): the composer tuned on warm users, then on
test leave-one-out and the cold stream, the composed soft prompt and composed + fitted, against
the same RLM without soft prompts (the plain served prompt).

- `soft`: composed from each prediction's own history (one extra RLM pass per prediction).
- `soft+fit`: what a worker stores, searched at checkpoints (`Checkpoints`) from the prefix up
  to the checkpoint alone: the composition there plus the fitted residual where it was kept;
  before a user's first checkpoint, the composition from the prediction's own history.
  On test, each user is fitted on their training examples and composed from their test history.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bench.strategies_stream import (
    ByCheckpoint,
    Checkpoints,
    checkpoint_examples,
    search_checkpoints,
    stream_fields,
)
from promptrec.models.cold_stream import ColdStream, ScoreFn
from promptrec.models.data.splits import Splits
from promptrec.models.evaluation import user_fields
from promptrec.models.prompts.selection import training_examples
from promptrec.models.prompts.soft.composer import (
    SoftComposer,
    served_vectors,
    soft_item_logits,
)
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import FitOutcome, fit_users
from promptrec.models.prompts.soft.pipeline import tune_on_splits
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog

ROWS = 128  # prompts per scoring call


@torch.inference_mode()
def soft_scores(
    lm: RecLM,
    composer: SoftComposer,
    config: SoftConfig,
    fields: list[PromptFields],
    stored: list[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Item scores with each row's stored vectors, else the composition from its fields (the
    interest pass only for those rows)."""
    stored = stored or [None] * len(fields)
    out = []
    for lo in range(0, len(fields), ROWS):
        chunk = fields[lo : lo + ROWS]
        vectors = served_vectors(lm, composer, config, chunk, stored[lo : lo + ROWS])
        out.append(soft_item_logits(lm, chunk, vectors, config.template).float().cpu().numpy())
    return np.concatenate(out)


def soft_stream_scorer(
    lm: RecLM,
    composer: SoftComposer,
    config: SoftConfig,
    profiles: list[list[str]],
    catalog: ItemCatalog,
    fitted: ByCheckpoint | None = None,
) -> ScoreFn:
    def score(users: list[int], histories: list[list[int]]) -> np.ndarray:
        fields = stream_fields(profiles, catalog, users, histories)
        stored = None
        if fitted is not None:
            outcomes = [fitted.latest(u, len(h)) for u, h in zip(users, histories, strict=True)]
            stored = [o.vectors if o is not None else None for o in outcomes]
        return soft_scores(lm, composer, config, fields, stored)

    return score


def soft_section(
    lm: RecLM,
    splits: Splits,
    catalog: ItemCatalog,
    profiles: list[list[str]],
    stream: ColdStream,
    checkpoints: Checkpoints,
    config: SoftConfig,
) -> tuple[dict[str, np.ndarray], dict[str, ScoreFn], dict[str, Any]]:
    """(test item scores per method, cold-stream scorers per method, report: config, tuning
    log, cost)."""
    cost: dict[str, Any] = {}
    t0 = time.perf_counter()
    composer, log = tune_on_splits(lm, splits, catalog, profiles, config)
    cost["soft_tuning_seconds"] = round(time.perf_counter() - t0, 1)

    users = list(range(len(splits.users)))
    test_fields = user_fields(splits, catalog, profiles, users, "test")
    examples = training_examples(splits, users, profiles, catalog, config)
    t0 = time.perf_counter()
    outcomes = fit_users(lm, composer, examples, test_fields, config)
    seconds = time.perf_counter() - t0
    cost["soft_fit_users_per_minute"] = round(len(users) / seconds * 60)
    cost["soft_fit_kept"] = sum(o.kept for o in outcomes)
    cost["soft_fit_steps"] = config.fit_steps
    test_scores = {
        "soft": soft_scores(lm, composer, config, test_fields),
        "soft+fit": soft_scores(lm, composer, config, test_fields, [o.vectors for o in outcomes]),
    }

    keys, stream_examples = checkpoint_examples(
        stream,
        splits.users,
        profiles,
        catalog,
        checkpoints,
        config.selection_per_user,
        config.held_out_per_user,
    )
    seqs = dict(zip(stream.users.tolist(), stream.sequences, strict=True))
    current = {
        f"{splits.users[u]}@{t}": PromptFields(
            list(seqs[u][:t]), profiles[u], catalog.taste_words(list(seqs[u][:t]))
        )
        for u, t in keys
    }

    def fit(ex) -> dict[str, FitOutcome]:
        found = fit_users(lm, composer, ex, [current[n] for n in ex.users], config)
        return dict(zip(ex.users, found, strict=True))

    fitted, fit_seconds = search_checkpoints(keys, stream_examples, fit)
    cost["stream_soft_fit_seconds_per_search"] = round(fit_seconds / max(len(keys), 1), 4)
    cost["stream_soft_fit_kept"] = sum(
        o.kept for _, values in fitted.found.values() for o in values if o is not None
    )
    scorers = {
        "soft": soft_stream_scorer(lm, composer, config, profiles, catalog),
        "soft+fit": soft_stream_scorer(lm, composer, config, profiles, catalog, fitted),
    }
    report = {"config": asdict(config), "tuning": log.as_dict(), "cost": cost}
    return test_scores, scorers, report

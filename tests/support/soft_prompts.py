"""Soft prompts for the tests: a composer for a test model, saved as `promptrec search
--strategy soft` saves one, and the model side's ranking of a soft prompt (what the gateway
must serve).

The composer is seeded and untrained, its pool scaled up: a tuned composer's pool starts near
zero and the tiny untrained model would hardly move, while these users' composed vectors
visibly reorder their rankings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptrec.models.prompts.soft.composer import SoftComposer, soft_item_logits
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog, profile_words

# Small and quick: a fit of a batch of users is a few passes.
TEST_CONFIG = SoftConfig(pool_size=8, fit_steps=4, fit_checks=2, fit_window=8)


def save_composer(
    directory: Path,
    lm: RecLM,
    config: SoftConfig = TEST_CONFIG,
    scale: float = 1.0,
    fingerprint: str | None = None,
) -> Path:
    """`directory` with the composer; `fingerprint`: the model it claims to be tuned on (the
    real one by default)."""
    torch.manual_seed(config.seed)
    composer = SoftComposer(lm.model.config.n_embd, config.pool_size, config.n_vectors)
    with torch.no_grad():
        composer.pool.normal_(0.0, scale)
    composer.save(directory, fingerprint or lm.fingerprint(), config, {"seeded": config.seed})
    return directory


def model_side_ranking(
    lm: RecLM, catalog: ItemCatalog, history: list[int], vectors: np.ndarray, count: int
) -> tuple[list[str], list[float]]:
    """The top `count` items (history left out) and their log-probabilities for a user without
    a profile, as `models.prompts.soft` scores the soft prompt with these vectors."""
    fields = PromptFields(history, profile_words(None, None, None), catalog.taste_words(history))
    with torch.inference_mode():
        logits = soft_item_logits(lm, [fields], torch.from_numpy(vectors)[None], "seq-1")
    scores = torch.log_softmax(logits.float(), 1)[0]
    scores[history] = float("-inf")
    top = torch.topk(scores, count)
    return [catalog.item_ids[i] for i in top.indices.tolist()], top.values.tolist()

"""A soft-prompt version as the database stores it: the user's vectors as bytes
(`user_prompts.vectors`) and, in its state, what they are (how many, the template they are
added to, the composer they were composed with) and what the fit found (the pool components
the user leans on, held-out log-probability before and after, kept, steps). Never the other
way round: the vectors are served, the state is shown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import FitOutcome
from promptrec.models.prompts.soft.state import vectors_from_bytes


@dataclass(frozen=True)
class SoftVersion:
    """What serving a soft version needs: the vectors and the template they belong to."""

    vectors: np.ndarray  # [k, d_model] float32
    template: str


def soft_state(outcome: FitOutcome, config: SoftConfig, composer: str) -> dict[str, Any]:
    """The state of a version made from `outcome` with a composer (its fingerprint) of this
    config: the template is stored because the vectors only mean something on it; the number
    of vectors is the outcome's own (what the bytes hold)."""
    return {
        "n_vectors": len(outcome.vectors),
        "template": config.template,
        "composer": composer,
        "components": [[int(i), float(w)] for i, w in outcome.components],
        "before": outcome.before,
        "after": outcome.after,
        "kept": outcome.kept,
        "steps": outcome.steps,
    }


def soft_version(state: dict[str, Any] | None, vectors: bytes | None) -> SoftVersion | None:
    """The served form of a stored soft version (None without vectors)."""
    if state is None or vectors is None:
        return None
    return SoftVersion(vectors_from_bytes(vectors, int(state["n_vectors"])), str(state["template"]))

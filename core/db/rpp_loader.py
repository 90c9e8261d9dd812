"""Load an RPP choices file (`promptrec search --strategy rpp` output) into the database: each
user's choice (their kept refined choice, else the policy's) becomes a prompt version of
strategy `rpp` whose state is the choice, by the rule PAP-REC sets follow (`prompt_loader`):
a new version only when the choice differs from the user's current version, never over a
version searched after the file, users the database does not know skipped and counted.
The policy stays in its folder; the workers read it (`PROMPTREC_RPP_CHOICES_PATH`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from promptrec.core.db.prompt_loader import PromptLoadReport, add_user_versions
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.rpp.slots import choice_label, choice_names
from promptrec.models.prompts.rpp.state import RppPromptSet

STRATEGY = StrategyName.RPP


def load_rpp_choices(engine: Engine, path: Path) -> PromptLoadReport:
    choices = RppPromptSet.load(path)  # checks the policy was trained on the file's model
    task, fingerprint = choices.task, choices.model_fingerprint
    if task != "sequential":
        raise ValueError(f"{path}: RPP's slots are sequential prompts, not {task}")
    searched_at = datetime.fromtimestamp(choices.created_at, UTC)
    versions: Iterator[tuple[str, dict[str, Any]]] = (
        (
            user,
            {
                "strategy": STRATEGY,
                "tokens": [],
                "state": choice_names(outcome.choice),
                "metric_before": outcome.search_before,
                "metric_after": outcome.search_after if outcome.kept else outcome.search_before,
                "metrics": {
                    "choice": choice_label(outcome.choice),
                    "policy_choice": choice_label(outcome.policy_choice),
                    "candidate": choice_label(outcome.candidate),
                    "kept": outcome.kept,
                    "held_out_logp_before": outcome.held_out_logp_before,
                    "held_out_logp_after": outcome.held_out_logp_after,
                },
            },
        )
        for user, outcome in sorted(choices.state.outcomes.items())
    )
    with Session(engine) as session, session.begin():
        counts = add_user_versions(session, task, fingerprint, searched_at, versions, "state")
    return PromptLoadReport.of(counts, strategy=STRATEGY)

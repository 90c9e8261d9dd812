"""Load an RPP choices file (`promptrec search --strategy rpp` output) into the database: each
user's choice (their kept refined choice, else the policy's) becomes a prompt version of
strategy `rpp` whose state is the choice, by the rule PAP-REC sets follow (`prompt_loader`):
a new version only when the choice differs from the user's current version, never over a
version searched after the file, users the database does not know skipped and counted.
The policy stays in its folder; the workers read it (`PROMPTREC_RPP_CHOICES_PATH`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from promptrec.core.db.prompt_loader import (
    PromptLoadReport,
    latest_locked,
    newer,
    next_user_version,
)
from promptrec.core.db.tables import User, UserPrompt
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
    added = unchanged = unknown = kept_newer = 0
    with Session(engine) as session, session.begin():
        known = set(session.scalars(select(User.user_id)))
        for user, outcome in sorted(choices.state.outcomes.items()):
            if user not in known:
                unknown += 1
                continue
            latest = latest_locked(session, user, task, fingerprint)
            state = choice_names(outcome.choice)
            if latest is not None and newer(latest.searched_at, searched_at):
                kept_newer += 1
                continue
            if latest is not None and latest.strategy == STRATEGY and latest.state == state:
                unchanged += 1
                continue
            session.add(
                UserPrompt(
                    user_id=user,
                    task=task,
                    model_fingerprint=fingerprint,
                    version=next_user_version(session, user, task),
                    strategy=STRATEGY,
                    tokens=[],
                    state=state,
                    metric_before=outcome.search_before,
                    metric_after=outcome.search_after if outcome.kept else outcome.search_before,
                    metrics={
                        "choice": choice_label(outcome.choice),
                        "policy_choice": choice_label(outcome.policy_choice),
                        "candidate": choice_label(outcome.candidate),
                        "kept": outcome.kept,
                        "held_out_logp_before": outcome.held_out_logp_before,
                        "held_out_logp_after": outcome.held_out_logp_after,
                    },
                    searched_at=searched_at,
                )
            )
            added += 1
    return PromptLoadReport(0, False, added, unchanged, unknown, kept_newer, strategy=STRATEGY)

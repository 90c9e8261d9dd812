"""Load a PAP-REC prompt set file (`promptrec search` output) into the database.

Idempotent: the task tokens become a new prompt-set version only when they differ from the
current one for that task and model; a searched user gets a new prompt version only when their
kept personal tokens (none when the task-level prompt won) differ from their current ones.
Users the database does not know are skipped and counted (load the dataset first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from models.prompts.paprec.state import PromptSet as PromptSetFile
from models.prompts.rendering import DEFAULT_TEMPLATE
from service.db.tables import PromptSet, User, UserPrompt


@dataclass(frozen=True)
class PromptLoadReport:
    task_version: int
    task_added: bool
    users_added: int
    users_unchanged: int
    users_unknown: int

    def line(self) -> str:
        task = "added as" if self.task_added else "unchanged at"
        return (
            f"task tokens {task} version {self.task_version}; personal prompts: "
            f"{self.users_added} added, {self.users_unchanged} unchanged, "
            f"{self.users_unknown} users not in the database"
        )


def _next_version(session: Session, column, *where) -> int:
    return (session.scalar(select(func.max(column)).where(*where)) or 0) + 1


def load_prompt_set(engine: Engine, path: Path) -> PromptLoadReport:
    prompt_file = PromptSetFile.load(path)
    task, fingerprint = prompt_file.task, prompt_file.model_fingerprint
    served = DEFAULT_TEMPLATE.get(task)
    if prompt_file.config.template != served:
        # Trigger tokens are searched after one template; after another they mean nothing.
        raise ValueError(
            f"{path} was searched after template {prompt_file.config.template}, but the "
            f"service serves {task} with {served}: search again (`promptrec search`)"
        )
    state = prompt_file.state
    with Session(engine) as session, session.begin():
        current = session.scalar(
            select(PromptSet)
            .where(PromptSet.task == task, PromptSet.model_fingerprint == fingerprint)
            .order_by(PromptSet.version.desc())
            .limit(1)
        )
        task_added = current is None or list(current.tokens) != state.task_tokens
        if task_added:
            version = _next_version(
                session,
                PromptSet.version,
                PromptSet.task == task,
                PromptSet.model_fingerprint == fingerprint,
            )
            session.add(
                PromptSet(
                    task=task,
                    model_fingerprint=fingerprint,
                    version=version,
                    tokens=state.task_tokens,
                    metrics={"task_history": state.task_history[-1:]},
                )
            )
        else:
            version = current.version
        known = set(session.scalars(select(User.user_id)))
        added = unchanged = unknown = 0
        now = datetime.now(UTC)
        for user, outcome in sorted(state.outcomes.items()):
            if user not in known:
                unknown += 1
                continue
            latest = session.scalar(
                select(UserPrompt)
                .where(
                    UserPrompt.user_id == user,
                    UserPrompt.task == task,
                    UserPrompt.model_fingerprint == fingerprint,
                    UserPrompt.rolled_back_at.is_(None),
                )
                .order_by(UserPrompt.version.desc())
                .limit(1)
            )
            # A searched user who keeps the task-level prompt gets a version with no tokens:
            # the worker's new-user trigger then knows they were searched.
            tokens = list(outcome.tokens) if outcome.kept else []
            if latest is not None and list(latest.tokens) == tokens:
                unchanged += 1
                continue
            session.add(
                UserPrompt(
                    user_id=user,
                    task=task,
                    model_fingerprint=fingerprint,
                    version=_next_version(
                        session,
                        UserPrompt.version,
                        UserPrompt.user_id == user,
                        UserPrompt.task == task,
                    ),
                    tokens=tokens,
                    metric_before=outcome.surrogate_before,
                    metric_after=outcome.surrogate_after
                    if outcome.kept
                    else outcome.surrogate_before,
                    metrics={
                        "held_out_logp_before": outcome.held_out_logp_before,
                        "held_out_logp_after": outcome.held_out_logp_after,
                    },
                    searched_at=now,
                )
            )
            added += 1
    return PromptLoadReport(version, task_added, added, unchanged, unknown)

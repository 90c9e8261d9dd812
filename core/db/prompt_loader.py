"""Load a PAP-REC prompt set file (`promptrec search` output) into the database.

Idempotent: the task tokens become a new prompt-set version only when they differ from the
current one for that task and model; a searched user gets a new prompt version only when their
kept personal tokens (none when the task-level prompt won) differ from their current ones.
Never backwards: a version searched after the file was (a worker's search since, a newer file)
is kept, so loading the shipped file at every start (`make run`) cannot undo later searches.
The set's search settings are stored with its tokens; the workers search with them.
Users the database does not know are skipped and counted (load the dataset first).
An RPP choices file is loaded by the same rule as versions of strategy rpp (`rpp_loader`), a
soft-prompt set file as versions of strategy soft (`soft_loader`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from promptrec.core.db.tables import PromptSet, User, UserPrompt
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.paprec.state import PromptSet as PromptSetFile
from promptrec.models.prompts.paprec.state import UserOutcome
from promptrec.models.prompts.rendering import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class UserVersionCounts:
    added: int = 0
    unchanged: int = 0
    unknown: int = 0
    newer: int = 0  # the database's version was searched after the file


@dataclass(frozen=True)
class PromptLoadReport:
    task_version: int
    task_added: bool
    users_added: int
    users_unchanged: int
    users_unknown: int
    users_newer: int = 0  # the database's version was searched after the file
    strategy: str = StrategyName.PAPREC

    @classmethod
    def of(
        cls,
        counts: UserVersionCounts,
        task_version: int = 0,
        task_added: bool = False,
        strategy: str = StrategyName.PAPREC,
    ) -> PromptLoadReport:
        return cls(
            task_version,
            task_added,
            counts.added,
            counts.unchanged,
            counts.unknown,
            counts.newer,
            strategy,
        )

    def line(self) -> str:
        task = "added as" if self.task_added else "unchanged at"
        head = f"task tokens {task} version {self.task_version}; personal prompts"
        if self.strategy == StrategyName.RPP:  # no task-level part
            head = "rpp choices"
        elif self.strategy == StrategyName.SOFT:
            head = "soft prompts"
        return (
            f"{head}: "
            f"{self.users_added} added, {self.users_unchanged} unchanged, "
            f"{self.users_newer} kept (searched after the file), "
            f"{self.users_unknown} users not in the database"
        )


def next_version(session: Session, column, *where) -> int:
    return (session.scalar(select(func.max(column)).where(*where)) or 0) + 1


def newer(searched_at: datetime | None, than: datetime) -> bool:
    if searched_at is None:
        return False
    if searched_at.tzinfo is None:  # SQLite keeps no zone; we write UTC
        searched_at = searched_at.replace(tzinfo=UTC)
    return searched_at > than


def file_strategy(path: Path) -> str:
    """The strategy whose file `path` is: rpp for an RPP choices file, soft for a soft-prompt
    set file, else paprec."""
    return json.loads(Path(path).read_text()).get("strategy") or StrategyName.PAPREC


def next_user_version(session: Session, user: str, task: str) -> int:
    return next_version(
        session, UserPrompt.version, UserPrompt.user_id == user, UserPrompt.task == task
    )


def latest_locked(session: Session, user: str, task: str, fingerprint: str) -> UserPrompt | None:
    """The user's current version for the task and model (not rolled back), after locking the
    user's row (Postgres), so that a worker writing this user's next version waits for the
    loader's transaction instead of taking the same number."""
    session.execute(select(User.user_id).where(User.user_id == user).with_for_update())
    return session.scalar(
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


def add_user_versions(
    session: Session,
    task: str,
    fingerprint: str,
    searched_at: datetime,
    versions: Iterable[tuple[str, dict[str, Any]]],
    identity: str,
) -> UserVersionCounts:
    """Each (user, columns of their version in the file) added as the user's next version, by
    the rule every prompt file follows: users the database does not know are skipped, a version
    searched after the file is kept, and one of the same strategy whose `identity` column (what
    the prompt is: tokens, choice, vectors) equals the file's is left unchanged."""
    known = set(session.scalars(select(User.user_id)))
    added = unchanged = unknown = kept_newer = 0
    for user, columns in versions:
        if user not in known:
            unknown += 1
            continue
        latest = latest_locked(session, user, task, fingerprint)
        if latest is not None and newer(latest.searched_at, searched_at):
            kept_newer += 1
            continue
        if (
            latest is not None
            and latest.strategy == columns["strategy"]
            and getattr(latest, identity) == columns[identity]
        ):
            unchanged += 1
            continue
        session.add(
            UserPrompt(
                user_id=user,
                task=task,
                model_fingerprint=fingerprint,
                version=next_user_version(session, user, task),
                searched_at=searched_at,
                **columns,
            )
        )
        added += 1
    return UserVersionCounts(added, unchanged, unknown, kept_newer)


def load_prompt_set(engine: Engine, path: Path) -> PromptLoadReport:
    """A PAP-REC prompt set, an RPP choices file (`rpp_loader`) or a soft-prompt set file
    (`soft_loader`)."""
    strategy = file_strategy(path)
    if strategy == StrategyName.RPP:
        from promptrec.core.db.rpp_loader import load_rpp_choices

        return load_rpp_choices(engine, path)
    if strategy == StrategyName.SOFT:
        from promptrec.core.db.soft_loader import load_soft_set

        return load_soft_set(engine, path)
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
    searched_at = datetime.fromtimestamp(prompt_file.created_at, UTC)
    config = asdict(prompt_file.config)
    with Session(engine) as session, session.begin():
        current = session.scalar(
            select(PromptSet)
            .where(PromptSet.task == task, PromptSet.model_fingerprint == fingerprint)
            .order_by(PromptSet.version.desc())
            .limit(1)
        )
        task_added = current is None or (
            list(current.tokens) != state.task_tokens
            and not newer(current.searched_at, searched_at)
        )
        if task_added:
            version = next_version(
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
                    config=config,
                    searched_at=searched_at,
                )
            )
        else:
            assert current is not None  # task_added when there is none
            version = current.version
            if current.config is None and list(current.tokens) == state.task_tokens:
                # Stored before sets kept their settings: this file is where they came from.
                current.config, current.searched_at = config, searched_at
        counts = add_user_versions(
            session,
            task,
            fingerprint,
            searched_at,
            ((user, _paprec_columns(outcome)) for user, outcome in sorted(state.outcomes.items())),
            identity="tokens",
        )
    return PromptLoadReport.of(counts, version, task_added)


def _paprec_columns(outcome: UserOutcome) -> dict[str, Any]:
    # A searched user who keeps the task-level prompt gets a version with no tokens: the
    # worker's new-user trigger then knows they were searched.
    return {
        "strategy": StrategyName.PAPREC,
        "tokens": list(outcome.tokens) if outcome.kept else [],
        "metric_before": outcome.surrogate_before,
        "metric_after": outcome.surrogate_after if outcome.kept else outcome.surrogate_before,
        "metrics": {
            "held_out_logp_before": outcome.held_out_logp_before,
            "held_out_logp_after": outcome.held_out_logp_after,
        },
    }

"""Prompt sets (task level, per model) and user prompts (personal, versioned, rollback-able)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.core.db.tables import DEFAULT_STRATEGY, PromptSet, User, UserPrompt
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.state import config_from_json


async def current_prompt_set(
    session: AsyncSession, task: str, fingerprint: str
) -> PromptSet | None:
    return await session.scalar(
        select(PromptSet)
        .where(PromptSet.task == task, PromptSet.model_fingerprint == fingerprint)
        .order_by(PromptSet.version.desc())
        .limit(1)
    )


def stored_config(row: PromptSet | None) -> PaprecConfig:
    """The search settings a prompt set was made with (the defaults for a set stored without
    them, or for no set at all)."""
    if row is None or not row.config:
        return PaprecConfig()
    return config_from_json(row.config)


def _served_versions(task: str, fingerprint: str):
    """Versions that may be served: not rolled back, searched on these model weights."""
    return (
        UserPrompt.task == task,
        UserPrompt.model_fingerprint == fingerprint,
        UserPrompt.rolled_back_at.is_(None),
    )


async def current_user_prompt(
    session: AsyncSession, user_id: str, task: str, fingerprint: str
) -> UserPrompt | None:
    """The newest version not rolled back, searched on these model weights."""
    return await session.scalar(
        select(UserPrompt)
        .where(UserPrompt.user_id == user_id, *_served_versions(task, fingerprint))
        .order_by(UserPrompt.version.desc())
        .limit(1)
    )


async def current_user_prompts(
    session: AsyncSession, user_ids: list[str], task: str, fingerprint: str
) -> dict[str, UserPrompt]:
    """`current_user_prompt` for many users in one query (users without one are absent)."""
    rows = await session.scalars(
        select(UserPrompt)
        .where(UserPrompt.user_id.in_(user_ids), *_served_versions(task, fingerprint))
        .order_by(UserPrompt.user_id, UserPrompt.version)
    )
    return {row.user_id: row for row in rows}  # the last, newest version of each user wins


async def add_prompt_set(
    session: AsyncSession,
    task: str,
    fingerprint: str,
    tokens: list[str],
    metrics: dict[str, Any] | None = None,
) -> PromptSet:
    latest = await session.scalar(
        select(func.max(PromptSet.version)).where(
            PromptSet.task == task, PromptSet.model_fingerprint == fingerprint
        )
    )
    row = PromptSet(
        task=task,
        model_fingerprint=fingerprint,
        version=(latest or 0) + 1,
        tokens=list(tokens),
        metrics=metrics or {},
    )
    session.add(row)
    await session.flush()
    return row


@dataclass(frozen=True)
class SearchedPrompt:
    user_id: str
    task: str
    fingerprint: str
    tokens: list[str]
    metric_before: float | None = None
    metric_after: float | None = None
    metrics: dict[str, Any] | None = None
    job_id: str | None = None
    strategy: str = DEFAULT_STRATEGY
    state: dict[str, Any] | None = None  # rpp: the slot choice; soft: what the vectors are
    vectors: bytes | None = None  # soft: the user's prompt vectors (`core.soft_versions`)


def is_personal(row: UserPrompt) -> bool:
    """The version changes what the user is served: PAP-REC personal tokens, an RPP choice or
    soft vectors, both with a state (a PAP-REC version without tokens records a search that
    kept the task-level prompt)."""
    return bool(row.tokens) or row.state is not None


async def add_user_prompt(session: AsyncSession, prompt: SearchedPrompt) -> UserPrompt:
    """Write the next version of a user's prompt and reset the user's drift counter.

    Safe with concurrent writers of the same user: the counter reset comes first and locks the
    user's row (Postgres: until commit; SQLite: the database's write lock), so the next
    writer reads `max(version)` only after this one committed. The caller commits, then
    invalidates the cached prompt (`invalidate_user_prompt`)."""
    await session.execute(
        update(User).where(User.user_id == prompt.user_id).values(events_since_search=0)
    )
    latest = await session.scalar(
        select(func.max(UserPrompt.version)).where(
            UserPrompt.user_id == prompt.user_id, UserPrompt.task == prompt.task
        )
    )
    row = UserPrompt(
        user_id=prompt.user_id,
        task=prompt.task,
        version=(latest or 0) + 1,
        model_fingerprint=prompt.fingerprint,
        strategy=prompt.strategy,
        tokens=list(prompt.tokens),
        state=prompt.state,
        vectors=prompt.vectors,
        metric_before=prompt.metric_before,
        metric_after=prompt.metric_after,
        metrics=prompt.metrics or {},
        searched_at=datetime.now(UTC),
        job_id=prompt.job_id,
    )
    session.add(row)
    await session.flush()
    return row


async def roll_back_user_prompt(
    session: AsyncSession, user_id: str, task: str, fingerprint: str
) -> tuple[UserPrompt, UserPrompt | None] | None:
    """Mark the current version rolled back. Returns (rolled back, now current), where now
    current is None when the user is back on the task-level prompt; None if there was no
    current version to roll back."""
    current = await current_user_prompt(session, user_id, task, fingerprint)
    if current is None or not is_personal(current):
        # No personal prompt is served (a PAP-REC version without tokens records a search that
        # kept the task-level prompt): there is nothing to roll back.
        return None
    current.rolled_back_at = datetime.now(UTC)
    await session.flush()
    return current, await current_user_prompt(session, user_id, task, fingerprint)


@dataclass(frozen=True)
class TaskPrompt:
    """The task's current prompt set: its tokens, and the settings it was searched with (which
    every personal search and drift check on top of it uses)."""

    tokens: list[str]
    config: PaprecConfig


async def task_prompt(session: AsyncSession, task: str, fingerprint: str) -> TaskPrompt:
    row = await current_prompt_set(session, task, fingerprint)
    return TaskPrompt(list(row.tokens) if row is not None else [], stored_config(row))

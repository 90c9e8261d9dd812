"""Users: lookup, recording unseen users, and who the worker's triggers select."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.tables import User, UserPrompt
from service.repositories.upsert import insert_ignoring_conflicts


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def ensure_users(session: AsyncSession, user_ids: list[str]) -> None:
    """Record users never seen before (profile unknown); existing users are left as they are."""
    if user_ids:
        statement = insert_ignoring_conflicts(session.bind.dialect.name, User)
        await session.execute(statement, [{"user_id": u} for u in dict.fromkeys(user_ids)])


async def ensure_user(session: AsyncSession, user_id: str) -> tuple[User, bool]:
    """The user's row, recording the user first if unseen; the flag says whether it was new
    (the caller commits then)."""
    user = await session.get(User, user_id)
    if user is not None:
        return user, False
    await ensure_users(session, [user_id])
    user = await session.get(User, user_id)
    assert user is not None
    return user, True


def has_prompt(task: str):
    return exists().where(UserPrompt.user_id == User.user_id, UserPrompt.task == task)


def due(scope: str, task: str, new_user_events: int, drift_events: int):
    """new: no personal prompt for the task yet and enough events for a search; drifting:
    searched before and enough events since. (What the admin scopes and the worker's scheduler
    select.)"""
    if scope == "new":
        return ~has_prompt(task) & (User.event_count >= new_user_events)
    if scope == "drifting":
        return has_prompt(task) & (User.events_since_search >= drift_events)
    raise ValueError(f"unknown scope {scope!r}")


async def existing_user_ids(session: AsyncSession, user_ids: list[str]) -> set[str]:
    rows = await session.scalars(select(User.user_id).where(User.user_id.in_(user_ids)))
    return set(rows)


async def scope_user_ids(
    session: AsyncSession, scope: str, task: str, new_user_events: int, drift_events: int
) -> list[str]:
    """`due` users of the scope, or every user for `all`."""
    query = select(User.user_id).order_by(User.user_id)
    if scope != "all":
        query = query.where(due(scope, task, new_user_events, drift_events))
    return list(await session.scalars(query))

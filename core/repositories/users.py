"""Users: lookup, recording unseen users, who the worker's triggers select, and what a search
reads about them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.core.db.tables import Interaction, JobScope, User, UserPrompt
from promptrec.core.repositories.prompts import current_user_prompts
from promptrec.core.repositories.upsert import insert_ignoring_conflicts
from promptrec.core.soft_versions import SoftVersion, soft_version
from promptrec.models.prompts.names import StrategyName


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def ensure_users(session: AsyncSession, user_ids: list[str]) -> None:
    """Record users never seen before (profile unknown); existing users are left as they are."""
    if user_ids:
        statement = insert_ignoring_conflicts(session.get_bind().dialect.name, User)
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
    if scope == JobScope.NEW:
        return ~has_prompt(task) & (User.event_count >= new_user_events)
    if scope == JobScope.DRIFTING:
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
    if scope != JobScope.ALL:
        query = query.where(due(scope, task, new_user_events, drift_events))
    return list(await session.scalars(query))


@dataclass(frozen=True)
class UserData:
    user_id: str
    history: list[str]  # item ids, oldest first
    age: float | None
    gender: str | None
    occupation: str | None
    personal_tokens: list[str]  # current personal prompt (empty: the task-level prompt)
    events_since_search: int
    rpp_choice: dict[str, str] | None = None  # the current version's RPP choice, if it is one
    soft: SoftVersion | None = None  # the current version's soft prompt, if it is one


def _rpp_choice(row: UserPrompt | None) -> dict[str, str] | None:
    if row is None or row.strategy != StrategyName.RPP or row.state is None:
        return None
    return dict(row.state)


def _soft(row: UserPrompt | None) -> SoftVersion | None:
    if row is None or row.strategy != StrategyName.SOFT:
        return None
    return soft_version(row.state, row.vectors)


async def load_users(
    session: AsyncSession, user_ids: Iterable[str], task: str, fingerprint: str
) -> dict[str, UserData]:
    user_ids = list(dict.fromkeys(user_ids))
    rows_of = {
        u.user_id: u for u in await session.scalars(select(User).where(User.user_id.in_(user_ids)))
    }
    histories: dict[str, list[str]] = {u: [] for u in rows_of}
    interactions = await session.execute(
        select(Interaction.user_id, Interaction.item_id)
        .where(Interaction.user_id.in_(list(rows_of)))
        .order_by(Interaction.user_id, Interaction.timestamp, Interaction.id)
    )
    for user_id, item_id in interactions:
        histories[user_id].append(item_id)
    prompts = await current_user_prompts(session, list(rows_of), task, fingerprint)
    return {
        user_id: UserData(
            user_id,
            histories[user_id],
            user.age,
            user.gender,
            user.occupation,
            list(prompts[user_id].tokens) if user_id in prompts else [],
            user.events_since_search,
            _rpp_choice(prompts.get(user_id)),
            _soft(prompts.get(user_id)),
        )
        for user_id, user in rows_of.items()
    }

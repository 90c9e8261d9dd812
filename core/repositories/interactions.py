"""Interactions: a user's history and idempotent event ingestion."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.core.db.tables import Interaction, User
from promptrec.core.repositories.upsert import insert_ignoring_conflicts


async def user_history(session: AsyncSession, user_id: str) -> list[str]:
    """Item ids the user interacted with, oldest first (ties in time keep arrival order)."""
    rows = await session.scalars(
        select(Interaction.item_id)
        .where(Interaction.user_id == user_id)
        .order_by(Interaction.timestamp, Interaction.id)
    )
    return list(rows)


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    user_id: str
    item_id: str
    timestamp: int
    recommendation_id: str | None = None


async def record_events(session: AsyncSession, events: list[NewEvent]) -> set[str]:
    """Insert the events whose id is new; returns those ids. Updates the users' counters."""
    if not events:
        return set()
    statement = insert_ignoring_conflicts(session.get_bind().dialect.name, Interaction).returning(
        Interaction.event_id
    )
    rows = [
        {
            "event_id": e.event_id,
            "user_id": e.user_id,
            "item_id": e.item_id,
            "timestamp": e.timestamp,
            "recommendation_id": e.recommendation_id,
        }
        for e in events
    ]
    inserted = set((await session.scalars(statement.values(rows))).all())
    per_user: Counter[str] = Counter()
    latest: dict[str, int] = {}
    for e in events:
        if e.event_id in inserted:
            per_user[e.user_id] += 1
            latest[e.user_id] = max(latest.get(e.user_id, e.timestamp), e.timestamp)
    for user_id in sorted(per_user):
        n = per_user[user_id]
        await session.execute(
            update(User)
            .where(User.user_id == user_id)
            .values(
                event_count=User.event_count + n,
                events_since_search=User.events_since_search + n,
                last_event_at=latest[user_id],
            )
        )
    return inserted

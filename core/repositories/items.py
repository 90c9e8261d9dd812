"""Items: the catalogue the model ranks, with titles and genres."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.core.db.tables import Item
from promptrec.core.repositories.upsert import insert_ignoring_conflicts


async def all_items(session: AsyncSession) -> list[Item]:
    return list(await session.scalars(select(Item)))


async def known_item_ids(session: AsyncSession, item_ids: list[str]) -> set[str]:
    if not item_ids:
        return set()
    rows = await session.scalars(select(Item.item_id).where(Item.item_id.in_(set(item_ids))))
    return set(rows)


async def ensure_items(session: AsyncSession, item_ids: list[str]) -> None:
    """Record items the model knows that the database lacks (no title or genres yet)."""
    if item_ids:
        statement = insert_ignoring_conflicts(session.get_bind().dialect.name, Item)
        await session.execute(statement, [{"item_id": i} for i in item_ids])

"""The item catalogue the gateway and the workers rank and describe items with, read from the
database."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from promptrec.core.db.tables import Interaction
from promptrec.core.repositories import items as item_repo
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog


async def load_catalog(sessions: async_sessionmaker, lm: RecLM) -> ItemCatalog:
    """Make sure every item the model ranks has a row (events may name it), then read titles,
    genres and interaction counts for the catalogue."""
    async with sessions() as session:
        rows = await item_repo.all_items(session)
        known = {r.item_id for r in rows}
        missing = [i for i in lm.item_ids if i not in known]
        for start in range(0, len(missing), 5000):
            await item_repo.ensure_items(session, missing[start : start + 5000])
        await session.commit()
        counts = dict(
            (
                await session.execute(
                    select(Interaction.item_id, func.count()).group_by(Interaction.item_id)
                )
            ).all()
        )
    items = pd.DataFrame(
        [(r.item_id, r.title, r.genres) for r in rows], columns=["item", "title", "genres"]
    )
    index_of = {item: k for k, item in enumerate(lm.item_ids)}
    by_index = {index_of[item]: n for item, n in counts.items() if item in index_of}
    return ItemCatalog.from_counts(lm.item_ids, items, by_index)

"""Load a dataset directory (ML-100k or `promptrec data import` output) into the database.

Idempotent: rows that exist are left as they are (users and items keyed by id, interactions by
an event id derived from user, item and time), so re-running adds only what is new. One
exception: items that the API or a worker recorded from the model's vocabulary before the
dataset was loaded have no title or genres; the dataset's metadata fills them in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from sqlalchemy import Engine, Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from promptrec.core.db.tables import Interaction, Item, User
from promptrec.models.data.dataset import InteractionData

CHUNK = 5000


@dataclass(frozen=True)
class LoadReport:
    users: int
    items: int
    interactions: int

    def line(self) -> str:
        return (
            f"added {self.users} users, {self.items} items, {self.interactions} interactions "
            "(existing rows kept)"
        )


def _insert_new(session: Session, table, rows: list[dict]) -> int:
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    before = _count(session, table)
    connection = session.connection()
    for start in range(0, len(rows), CHUNK):
        connection.execute(
            insert(table.__table__).on_conflict_do_nothing(), rows[start : start + CHUNK]
        )
    return _count(session, table) - before


def _count(session: Session, table) -> int:
    return session.execute(select(func.count()).select_from(table)).scalar_one()


def _text(value, max_length: int) -> str | None:
    """The value as text cut to the column's length; None for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text[:max_length] if text not in ("", "<NA>", "nan") else None


def _fill_blank_items(session: Session, items: list[dict]) -> None:
    table = cast(Table, Item.__table__)  # a declarative class's table is a Table
    statement = (
        update(table)
        .where(table.c.item_id == bindparam("id"), table.c.title == "", table.c.genres == "")
        .values(title=bindparam("new_title"), genres=bindparam("new_genres"))
    )
    rows = [
        {"id": i["item_id"], "new_title": i["title"], "new_genres": i["genres"]}
        for i in items
        if i["title"] or i["genres"]
    ]
    if rows:
        session.connection().execute(statement, rows)


def event_id(user: str, item: str, timestamp: int) -> str:
    return f"load:{user}:{item}:{timestamp}"


def load_dataset(engine: Engine, directory: Path) -> LoadReport:
    data = InteractionData.load(directory)
    frame = data.interactions.sort_values(["user", "timestamp"], kind="stable")
    users: dict[str, dict[str, str | float | None]] = {
        str(u): {"user_id": str(u)} for u in frame["user"].unique()
    }
    for row in data.users.itertuples(index=False):
        age = float(row.age) if row.age is not None and not math.isnan(float(row.age)) else None
        users[str(row.user)] = {
            "user_id": str(row.user),
            "age": age,
            "gender": _text(row.gender, 32),
            "occupation": _text(row.occupation, 64),
        }
    items = {str(i): {"item_id": str(i), "title": "", "genres": ""} for i in frame["item"].unique()}
    for row in data.items.itertuples(index=False):
        items[str(row.item)] = {
            "item_id": str(row.item),
            "title": _text(row.title, 512) or "",
            "genres": _text(row.genres, 512) or "",
        }
    interactions = [
        {
            "event_id": event_id(str(u), str(i), int(t)),
            "user_id": str(u),
            "item_id": str(i),
            "timestamp": int(t),
            "rating": None if r != r else float(r),
        }
        for u, i, t, r in zip(
            frame["user"], frame["item"], frame["timestamp"], frame["rating"], strict=True
        )
    ]
    with Session(engine) as session, session.begin():
        # Rows without a profile key set explicitly: give every row the same keys.
        user_rows = [
            {"age": None, "gender": None, "occupation": None, **row} for row in users.values()
        ]
        n_users = _insert_new(session, User, user_rows)
        n_items = _insert_new(session, Item, list(items.values()))
        _fill_blank_items(session, list(items.values()))
        n_interactions = _insert_new(session, Interaction, interactions)
        # The trigger counters count every interaction a user has.
        counts = select(func.count()).where(Interaction.user_id == User.user_id)
        latest = select(func.max(Interaction.timestamp)).where(Interaction.user_id == User.user_id)
        if n_interactions:
            session.execute(
                update(User).values(
                    event_count=counts.scalar_subquery(), last_event_at=latest.scalar_subquery()
                )
            )
    return LoadReport(n_users, n_items, n_interactions)

"""`INSERT ... ON CONFLICT DO NOTHING` for the two dialects the service runs on."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite


def insert_ignoring_conflicts(dialect_name: str, table):
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect_name!r}")

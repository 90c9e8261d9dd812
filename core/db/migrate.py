"""Alembic from Python: the CLI's `db upgrade` and the tests use these."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def alembic_config(database_url: str | None = None, configure_logging: bool = False) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logging"] = configure_logging
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def check(database_url: str | None = None) -> None:
    """Raises if the models and the migrated database differ (autogenerate finds changes)."""
    command.check(alembic_config(database_url))

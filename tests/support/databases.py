"""The shared local Postgres and Redis (127.0.0.1:5432 and :6379): scratch databases and key
prefixes that are removed afterwards, and a database prepared as `make run` prepares one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import unavailable

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def temporary_postgres_database(
    template: str | None = None, prefix: str = "promptrec_test"
) -> Iterator[str]:
    """A uniquely named database (a copy of `template` if given), dropped afterwards; yields
    its SQLAlchemy URL."""
    import psycopg

    if not postgres_available():
        unavailable("Postgres is not running on 127.0.0.1:5432 (.ci/run starts it)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        copy = f' TEMPLATE "{template}"' if template else ""
        connection.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepared_database(url: str, dataset_dir: Path) -> str:
    """Migrated to the latest revision, the dataset loaded (idempotent); returns `url`."""
    from promptrec.core.db import migrate
    from promptrec.core.db.dataset_loader import load_dataset
    from promptrec.core.db.engine import make_sync_engine

    migrate.upgrade(url)
    engine = make_sync_engine(url)
    try:
        load_dataset(engine, dataset_dir)
    finally:
        engine.dispose()
    return url


def redis_available(url: str = REDIS_URL) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def delete_redis_keys(prefix: str, url: str = REDIS_URL) -> None:
    """Every key under `prefix` (a test's or a benchmark's own)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

"""What the service tests share besides fixtures: the admin key, the app handle, prompt writers."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from promptrec.core.db import migrate
from promptrec.core.db.dataset_loader import load_dataset
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.settings import Settings

ADMIN_KEY = "test-admin-key-0123456789abcdef"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def prepared_database(url: str, dataset_dir: Path) -> str:
    migrate.upgrade(url)
    engine = make_sync_engine(url)
    try:
        load_dataset(engine, dataset_dir)
    finally:
        engine.dispose()
    return url


def service_settings(database_url: str, **overrides) -> Settings:
    values = {
        "database_url": database_url,
        "redis_url": None,
        "admin_api_key": ADMIN_KEY,
        "max_wait_ms": 1.0,
        "request_timeout_ms": 10_000.0,
        "new_user_events": 3,
        "drift_events": 2,
        # The API tests write prompts themselves; the worker has its own tests.
        "embedded_worker": False,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Service:
    mode: str
    client: TestClient
    settings: Settings

    @property
    def runtime(self):
        return self.client.app.state.runtime


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def run_async(service: Service, function, *args):
    """Run `await function(*args)` on the app's own event loop."""
    return service.client.portal.call(function, *args)


async def write_user_prompt(runtime, user_id: str, task: str, tokens: list[str]) -> int:
    """What the worker will do: commit a new version, then invalidate the cached prompt."""
    from promptrec.core.cached_reads import invalidate_user_prompt
    from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt

    async with runtime.sessions() as session:
        row = await add_user_prompt(
            session,
            SearchedPrompt(user_id, task, runtime.fingerprint, tokens, 0.25, 0.5, {"ndcg@10": 0.5}),
        )
        await session.commit()
    await invalidate_user_prompt(runtime.cache, runtime.fingerprint, task, user_id)
    return row.version


async def write_task_prompt(runtime, task: str, tokens: list[str]) -> int:
    from promptrec.core.cached_reads import invalidate_task_prompt
    from promptrec.core.repositories.prompts import add_prompt_set

    async with runtime.sessions() as session:
        row = await add_prompt_set(session, task, runtime.fingerprint, tokens, {"ndcg@10": 0.3})
        await session.commit()
    await invalidate_task_prompt(runtime.cache, runtime.fingerprint, task)
    return row.version


def new_user_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _postgres_available() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def temporary_postgres_database(template: str | None = None) -> Iterator[str]:
    """A uniquely named database (a copy of `template` if given), dropped afterwards; yields
    its SQLAlchemy URL."""
    import psycopg

    if not _postgres_available():
        pytest.skip("Postgres is not running on 127.0.0.1:5432 (.ci/run starts it)")
    name = f"promptrec_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        copy = f' TEMPLATE "{template}"' if template else ""
        connection.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

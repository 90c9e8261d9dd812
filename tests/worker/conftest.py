"""Worker fixtures: the shipped small model and MovieLens-100k with the shipped prompt set in
Postgres, as `make run` loads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.models.data.movielens import fetch_movielens
from promptrec.models.rlm.model import RecLM
from tests.support.databases import prepared_database, temporary_postgres_database
from tests.support.paths import MOVIELENS, SHIPPED_PROMPTS, SMALL_MODEL
from tests.support.private_servers import RedisServer
from tests.support.search_jobs import JobView, prompt_versions, queue_job
from tests.support.settings import worker_env

USERS = [str(u) for u in range(1, 33)]  # a job of four worker batches of 8


def queued_job(
    database_url: str, redis_url: str, fingerprint: str, strategy: str = "paprec", **settings
) -> tuple[dict[str, str], dict[str, int], JobView]:
    """A job for USERS, queued as the gateway queues it; (worker env, versions before, view)."""
    env = worker_env(database_url, redis_url, SMALL_MODEL, **settings)
    before = prompt_versions(database_url, USERS)
    view = JobView(database_url, queue_job(env, USERS, fingerprint, strategy=strategy))
    return env, before, view


def assert_every_user_has_one_new_version(view: JobView, database_url: str, before: dict):
    assert view.statuses() == {"done": len(USERS)}
    assert view.job_status() == "done"
    assert view.versions_written() == dict.fromkeys(USERS, 1)
    after = prompt_versions(database_url, USERS)
    assert after == {u: before.get(u, 0) + 1 for u in USERS}


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory) -> Path:
    if (MOVIELENS / "interactions.parquet").is_file():  # fetched already by `make run`
        return MOVIELENS
    out = tmp_path_factory.mktemp("ml") / "ml-100k"
    fetch_movielens(out)
    return out


@pytest.fixture(scope="session")
def small_fingerprint() -> str:
    return RecLM.load(SMALL_MODEL).fingerprint()


@pytest.fixture(scope="session")
def movielens_template(movielens_dir) -> Iterator[str]:
    """A Postgres database with ML-100k and the shipped prompt set loaded, as `make run` loads
    them; tests take copies (`CREATE DATABASE ... TEMPLATE`)."""
    with temporary_postgres_database() as url:
        prepared_database(url, movielens_dir)
        engine = make_sync_engine(url)
        try:
            load_prompt_set(engine, SHIPPED_PROMPTS)
        finally:
            engine.dispose()
        yield make_url(url).database


@pytest.fixture
def movielens_database(movielens_template) -> Iterator[str]:
    with temporary_postgres_database(template=movielens_template) as url:
        yield url


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A private Redis the test may kill or restart."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()

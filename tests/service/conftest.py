"""Gateway fixtures: the synthetic dataset loaded into a database, and the app in both modes:
embedded (SQLite + in-process cache) and real Postgres + Redis.

Each test session creates its own Postgres database and Redis key prefix and removes them after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from models.data.movielens import fetch_movielens
from models.rlm.model import RecLM
from service.api.app import create_app
from service.db.engine import make_sync_engine
from service.db.prompt_loader import load_prompt_set
from tests.support.databases import REDIS_URL, prepared_database, temporary_postgres_database
from tests.support.gateway_app import Service
from tests.support.paths import MOVIELENS, SHIPPED_PROMPTS, SMALL_MODEL
from tests.support.settings import service_settings


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory, dataset_dir) -> str:
    path = tmp_path_factory.mktemp("db") / "promptrec.db"
    return prepared_database(f"sqlite:///{path}", dataset_dir)


@pytest.fixture(scope="session", params=["embedded", "postgres+redis"])
def service(request, lm, dataset_dir, embedded_url) -> Iterator[Service]:
    """The app with its lifespan running, in each storage mode."""
    if request.param == "embedded":
        settings = service_settings(embedded_url)
    else:
        url = prepared_database(request.getfixturevalue("postgres_url"), dataset_dir)
        settings = service_settings(
            url, redis_url=REDIS_URL, redis_key_prefix=request.getfixturevalue("redis_prefix")
        )
    with TestClient(create_app(settings, lm=lm)) as client:
        yield Service(request.param, client, settings)


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

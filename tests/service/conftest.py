"""Gateway fixtures: the synthetic dataset loaded into a database, and the app in both modes:
embedded (SQLite + in-process cache) and real Postgres + Redis.

Each test session creates its own Postgres database and Redis key prefix and removes them after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from promptrec.cli.gateway import gateway_app
from tests.support.databases import REDIS_URL, prepared_database, temporary_postgres_database
from tests.support.gateway_app import Service
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
    with TestClient(gateway_app(settings, lm=lm)) as client:
        yield Service(request.param, client, settings)

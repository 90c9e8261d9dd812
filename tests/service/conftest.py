"""Service fixtures: a tiny untrained model, the synthetic dataset loaded into a database, and
apps in both modes: embedded (SQLite + in-process cache) and real Postgres + Redis.

Each test session creates its own Postgres database and Redis key prefix and removes them after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gateway_testing import (
    REDIS_URL,
    Service,
    prepared_database,
    service_settings,
    temporary_postgres_database,
)
from sqlalchemy.engine import make_url

from promptrec.cli.gateway import gateway_app
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.models.data.movielens import fetch_movielens
from promptrec.models.data.splits import make_splits
from promptrec.models.rlm.model import RecLM
from promptrec.models.rlm.train import TrainConfig, build_rlm


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, data) -> Path:
    """An untrained tiny RLM: rankings are arbitrary but deterministic, which is all the API
    tests need."""
    lm, _, _ = build_rlm(data, make_splits(data), TrainConfig(preset="tiny"))
    out = tmp_path_factory.mktemp("model")
    lm.save(out)
    return out


@pytest.fixture(scope="session")
def lm(model_dir) -> RecLM:
    return RecLM.load(model_dir)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    data.save(out)
    return out


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    prefix = f"promptrec-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


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


REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = REPO / "artifacts" / "rlm-small"
SHIPPED_PROMPTS = REPO / "artifacts" / "prompts" / "sequential.json"


@pytest.fixture(scope="session")
def movielens_dir(tmp_path_factory) -> Path:
    shipped = REPO / "data" / "ml-100k"
    if (shipped / "interactions.parquet").is_file():  # fetched already by `make run`
        return shipped
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

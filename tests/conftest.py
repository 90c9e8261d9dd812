"""Shared fixtures: a small synthetic catalogue with structure a model can learn quickly, a tiny
untrained model and the catalogue as a dataset directory (for the gateway and worker tests), and
a Redis key prefix of this session's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.rlm.model import RecLM
from tests.support.databases import REDIS_URL, delete_redis_keys, redis_available

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
OCCUPATIONS = ["engineer", "artist", "student", "doctor"]


def synthetic_data(n_users: int = 80, n_items: int = 60, length: int = 14, seed: int = 0):
    """Each user walks through one genre's items in order, so the next item is predictable."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item": [f"m{i}" for i in range(n_items)],
            "title": [
                f"Film {GENRES[i % len(GENRES)]} number {i} (199{i % 10})" for i in range(n_items)
            ],
            "genres": [GENRES[i % len(GENRES)] for i in range(n_items)],
        }
    )
    rows, users = [], []
    for u in range(n_users):
        genre = u % len(GENRES)
        pool = [i for i in range(n_items) if i % len(GENRES) == genre]
        start = int(rng.integers(len(pool)))
        for t in range(length):
            rows.append((f"u{u}", f"m{pool[(start + t) % len(pool)]}", 1_000_000 + 60 * t, 4.0))
        users.append((f"u{u}", float(18 + 3 * (u % 15)), "MF"[u % 2], OCCUPATIONS[u % 4]))
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    user_table = pd.DataFrame(users, columns=["user", "age", "gender", "occupation"])
    return InteractionData(interactions, items, user_table)


@pytest.fixture(scope="session")
def data() -> InteractionData:
    return synthetic_data()


@pytest.fixture(scope="session")
def splits(data):
    return make_splits(data)


@pytest.fixture(scope="session")
def data_without_repeats() -> InteractionData:
    """Nobody meets an item twice, so a held-out item is truly absent from training."""
    return synthetic_data(n_users=80, n_items=120, length=14)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, data) -> Path:
    """An untrained tiny RLM: rankings are arbitrary but deterministic, which is all the API
    and worker tests need."""
    from promptrec.models.rlm.train import TrainConfig, build_rlm

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
def redis_prefix() -> Iterator[str]:
    """A key prefix on the shared Redis, its keys deleted at the end of the session."""
    if not redis_available():
        pytest.skip("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    prefix = f"promptrec-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_redis_keys(prefix, REDIS_URL)

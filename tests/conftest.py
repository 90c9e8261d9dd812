"""Shared fixtures: a small synthetic catalogue with structure a model can learn quickly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits

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

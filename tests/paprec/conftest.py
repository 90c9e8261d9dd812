"""PAP-REC fixtures: a tiny model trained once per session on the synthetic data, and selection
examples of 24 of its users."""

from __future__ import annotations

import pytest

from promptrec.models.prompts.selection import SearchExamples, build_examples
from promptrec.models.rlm.model import RecLM
from promptrec.models.rlm.train import TrainConfig, train_rlm
from promptrec.models.user_context import ItemCatalog, user_profiles


@pytest.fixture(scope="session")
def lm(tmp_path_factory, data, splits) -> RecLM:
    out = tmp_path_factory.mktemp("paprec-rlm")
    config = TrainConfig(
        preset="tiny", epochs=1, batch_size=32, lr=5e-3, warmup_steps=10, valid_users=20
    )
    train_rlm(data, splits, out, config, progress=False)
    return RecLM.load(out)


@pytest.fixture(scope="session")
def examples(data, splits) -> SearchExamples:
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    users = list(range(24))
    return build_examples(
        [splits.users[u] for u in users],
        [splits.train[u] for u in users],
        [profiles[u] for u in users],
        catalog,
        per_user=4,
    )

"""Training windows of the RLM: what a position may see, and what it must not."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.rlm.config import CorpusConfig
from promptrec.models.rlm.corpus import IGNORE, TrainingCorpus, user_windows
from promptrec.models.user_context import ItemCatalog, user_profiles


def _samples(corpus: TrainingCorpus, epochs: int = 2, batch_size: int = 8):
    return [
        sample
        for epoch in range(epochs)
        for batch in corpus.epoch(np.random.default_rng(epoch), batch_size)
        for sample in batch
    ]


def _corpus(data, splits, max_history=6, **config):
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    return TrainingCorpus(splits, catalog, profiles, max_history, CorpusConfig(**config))


@pytest.mark.parametrize("length", [2, 3, 7, 8, 13, 30])
def test_windows_hold_every_transition_exactly_once(length):
    seq = list(range(length))
    transitions = [
        (seq[i], seq[i + 1]) for start, end in user_windows(seq, 6) for i in range(start, end - 1)
    ]
    assert sorted(transitions) == [(i, i + 1) for i in range(length - 1)]
    assert all(end - start <= 7 for start, end in user_windows(seq, 6))


def test_no_training_sample_reveals_a_validation_or_test_target(data_without_repeats):
    data = data_without_repeats
    splits = make_splits(data)
    users_seen = set()
    for sample in _samples(_corpus(data, splits)):
        if sample.user is None:  # an item content document: no user, no interaction
            assert not any(t.startswith("item_") for t in sample.tokens)
            continue
        u = sample.user
        users_seen.add(u)
        assert not splits.cold[u], "cold users never reach RLM training"
        held_out = {splits.valid[u], splits.test[u]}
        assert not held_out & set(splits.train[u])  # so any appearance below is a leak
        assert not held_out & set(sample.items)
        assert not held_out & set(sample.targets)
    assert users_seen == set(np.flatnonzero(~splits.cold))


def test_moving_every_validation_and_test_item_changes_no_sample(data_without_repeats):
    """The strict form of the leakage test: a sample may depend on training sequences only."""
    data = data_without_repeats
    splits = make_splits(data)
    moved = replace(
        splits,
        valid=[(i + 1) % splits.n_items for i in splits.valid],
        test=[(i + 2) % splits.n_items for i in splits.test],
    )
    assert _samples(_corpus(data, splits)) == _samples(_corpus(data, moved))


def _genre_switchers() -> InteractionData:
    """Each user watches six films of one genre, then eight of another: a taste computed from
    later items says something else than one computed from earlier ones."""
    genres = ["Action", "Comedy", "Drama", "Horror"]
    items = pd.DataFrame(
        {
            "item": [f"m{i}" for i in range(80)],
            "title": [f"film {i}" for i in range(80)],
            "genres": [genres[i % 4] for i in range(80)],
        }
    )
    rows = []
    for u in range(40):
        first, second = u % 4, (u + 1) % 4
        watched = [first + 4 * k for k in range(6)] + [second + 4 * (6 + k) for k in range(8)]
        rows += [(f"u{u}", f"m{i}", 1_000 + 60 * t, 4.0) for t, i in enumerate(watched)]
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    users = pd.DataFrame(
        {"user": [f"u{u}" for u in range(40)], "age": 30.0, "gender": "F", "occupation": "artist"}
    )
    return InteractionData(interactions, items, users)


GENRE_WORDS = {"action", "comedy", "drama", "horror"}


def test_taste_words_summarise_only_items_before_every_position_with_a_target():
    data = _genre_switchers()
    splits = make_splits(data)
    catalog = ItemCatalog.build(data.items, splits)
    corpus = _corpus(data, splits, max_history=20, field_drop=0.0, taste_cut_max=12)
    checked = 0
    for sample in _samples(corpus, epochs=3):
        if sample.user is None:
            continue
        seq = splits.train[sample.user]
        after = sample.prefix[sample.prefix.index("taste") + 2 :]
        taste = [w for w in after[:3] if w in GENRE_WORDS]  # the template's words follow
        start = next(s for s in range(len(seq)) if seq[s : s + len(sample.items)] == sample.items)
        kept = [start + k for k, t in enumerate(sample.targets) if t != IGNORE]
        cut = min(kept)
        # every position with a target predicts an item the taste has not seen ...
        assert catalog.taste_words(seq[:cut]) == taste
        # ... and nothing before the cut carries a loss
        assert all(t == IGNORE for k, t in enumerate(sample.targets) if start + k < cut)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_field_drop_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match="field drop"):
        CorpusConfig(field_drop=value)

from dataclasses import replace

import numpy as np
import pytest

from models.data.splits import SplitConfig, make_splits
from models.rlm.corpus import CorpusConfig, TrainingCorpus
from models.user_context import ItemCatalog, user_profiles


def test_leave_one_out_is_chronological(data, splits):
    frame = data.interactions.sort_values(["user", "timestamp"], kind="stable")
    for u, user in enumerate(splits.users):
        external = list(frame.loc[frame["user"] == user, "item"])
        internal = [*splits.train[u], splits.valid[u], splits.test[u]]
        assert [splits.item_ids[i] for i in internal] == external


def test_item_ids_are_a_seeded_random_permutation(data):
    a, b = make_splits(data, SplitConfig(seed=0)), make_splits(data, SplitConfig(seed=0))
    c = make_splits(data, SplitConfig(seed=1))
    assert a.item_ids == b.item_ids
    assert a.item_ids != c.item_ids
    assert a.item_ids != sorted(a.item_ids)  # not numbered by order of appearance or name


def test_cold_users_are_a_seeded_fifth(splits):
    assert splits.cold.sum() == round(0.2 * len(splits.users))
    assert 0 < splits.cold.sum() < len(splits.users)


def test_no_training_sample_reveals_a_validation_or_test_target(data_without_repeats):
    data = data_without_repeats
    splits = make_splits(data)
    catalog = ItemCatalog.build(data.items, splits)
    corpus = TrainingCorpus(
        splits,
        catalog,
        user_profiles(data.users, splits),
        max_history=10,
        config=CorpusConfig(direct_fraction=0.5, short_history=0.3),
    )
    token_of = {i: f"item_{i}" for i in range(splits.n_items)}
    users_seen = set()
    for epoch in range(2):
        for sample in corpus.epoch(np.random.default_rng(epoch)):
            if sample.user is None:  # an item content document: no user, no interaction
                assert not any(t.startswith("item_") for t in sample.tokens)
                continue
            u = sample.user
            users_seen.add(u)
            assert not splits.cold[u], "cold users never reach RLM training"
            held_out = {splits.valid[u], splits.test[u]}
            assert not held_out & set(splits.train[u])  # so any appearance below is a leak
            shown = {t for t in sample.tokens if t.startswith("item_")}  # history + candidates
            assert not shown & {token_of[i] for i in held_out}
            assert not set(sample.targets) & held_out
    assert users_seen == set(np.flatnonzero(~splits.cold))


def test_the_teacher_targets_are_fitted_on_training_sequences_only(data_without_repeats):
    """With the item-transition teacher on, a training sample's soft target may name any item,
    so leakage is tested the strict way: other validation and test items change no sample."""
    data = data_without_repeats
    splits = make_splits(data)
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    config = CorpusConfig(direct_fraction=0.0, teacher_weight=0.5, teacher_items=20)
    moved = replace(
        splits,
        valid=[(i + 1) % splits.n_items for i in splits.valid],
        test=[(i + 2) % splits.n_items for i in splits.test],
    )
    samples = [
        TrainingCorpus(s, catalog, profiles, max_history=10, config=config).epoch(
            np.random.default_rng(0)
        )
        for s in (splits, moved)
    ]
    assert samples[0] == samples[1]
    with_teacher = [s for s in samples[0] if s.user is not None]
    assert any(len(s.targets) > config.next_items for s in with_teacher)
    for s in with_teacher:
        assert len(set(s.targets)) == len(s.targets) and sum(s.weights) == pytest.approx(1.0)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_teacher_weight_outside_zero_one_is_refused(weight):
    with pytest.raises(ValueError, match="teacher weight"):
        CorpusConfig(teacher_weight=weight)

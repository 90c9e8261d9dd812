from promptrec.models.data.splits import SplitConfig, make_splits


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

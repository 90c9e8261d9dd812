"""Chronological leave-one-out splits with permuted item ids and held-out cold users (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from promptrec.models.data.dataset import InteractionData

MIN_INTERACTIONS = 3  # one train item at least, plus validation and test


@dataclass(frozen=True)
class SplitConfig:
    seed: int = 0
    cold_fraction: float = 0.2


@dataclass
class Splits:
    """Per-user sequences over internal item indices.

    Internal index k is shown to the RLM as token `item_k`; `item_ids[k]` is the external id.
    The permutation is seeded and random, so neighbouring indices carry no information.
    """

    item_ids: list[str]
    users: list[str]
    train: list[list[int]]
    valid: list[int]
    test: list[int]
    cold: np.ndarray  # bool per user: kept out of RLM training entirely
    skipped_users: dict[str, int] = field(default_factory=dict)  # user -> interaction count

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user: str) -> int:
        return self.users.index(user)

    def history(self, u: int, split: str) -> list[int]:
        """The input history when predicting `split` ("valid" or "test") for user index u."""
        if split == "valid":
            return self.train[u]
        if split == "test":
            return [*self.train[u], self.valid[u]]
        raise ValueError(f"unknown split {split!r}; use 'valid' or 'test'")

    def target(self, u: int, split: str) -> int:
        return {"valid": self.valid, "test": self.test}[split][u]

    def user_indices(self, group: str) -> np.ndarray:
        if group == "warm":
            return np.flatnonzero(~self.cold)
        if group == "cold":
            return np.flatnonzero(self.cold)
        if group == "all":
            return np.arange(len(self.users))
        raise ValueError(f"unknown user group {group!r}; use warm, cold or all")


def make_splits(data: InteractionData, config: SplitConfig = SplitConfig()) -> Splits:
    rng = np.random.default_rng(config.seed)
    catalogue = sorted(set(data.interactions["item"]) | set(data.items["item"]))
    permutation = rng.permutation(len(catalogue))
    item_ids = [catalogue[i] for i in permutation]
    index_of = {item: k for k, item in enumerate(item_ids)}

    # Stable sort: ties in time keep file order, so the split is reproducible.
    frame = data.interactions.sort_values(["user", "timestamp"], kind="stable")
    users, train, valid, test, skipped = [], [], [], [], {}
    for user, group in frame.groupby("user", sort=True):
        sequence = [index_of[i] for i in group["item"]]
        if len(sequence) < MIN_INTERACTIONS:
            skipped[str(user)] = len(sequence)
            continue
        users.append(str(user))
        train.append(sequence[:-2])
        valid.append(sequence[-2])
        test.append(sequence[-1])
    cold = np.zeros(len(users), dtype=bool)
    n_cold = round(config.cold_fraction * len(users))
    cold[rng.choice(len(users), size=n_cold, replace=False)] = True
    return Splits(item_ids, users, train, valid, test, cold, skipped)

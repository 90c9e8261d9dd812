"""Selection data for prompt search: each user's last few *training* interactions.

Using several recent interactions (not the validation item alone) keeps personal tokens from
overfitting one item; the validation and test items are never looked at.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from promptrec.models.data.splits import Splits
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog


@dataclass
class SearchExamples:
    """Flat lists, one entry per example; `owner[j]` indexes `users`."""

    users: list[str]
    owner: list[int]
    fields: list[PromptFields]
    targets: list[int]
    held_out: list[bool]  # True: kept out of the search, used to decide keep/discard

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, held_out: bool) -> list[int]:
        return [j for j, h in enumerate(self.held_out) if h == held_out]

    def by_user(self) -> list[list[int]]:
        """Per user: their examples' indices, oldest first (shortest history first)."""
        rows: list[list[int]] = [[] for _ in self.users]
        for j, u in enumerate(self.owner):
            rows[u].append(j)
        return [sorted(js, key=lambda j: len(self.fields[j].history)) for js in rows]


def earliest_fields(examples: SearchExamples) -> list[PromptFields]:
    """Per user of `examples`: the prompt fields of their earliest example (the history before
    it, with the words it states); a user without examples gets an empty prompt."""
    return [examples.fields[js[0]] if js else PromptFields([]) for js in examples.by_user()]


def build_examples(
    users: Sequence[str],
    histories: Sequence[Sequence[int]],
    profiles: Sequence[Sequence[str]],
    catalog: ItemCatalog,
    per_user: int = 4,
    held_out_per_user: int = 1,
) -> SearchExamples:
    """For each user, predict each of their last `per_user` items from the items before it.

    The most recent `held_out_per_user` of those are held out of the search: a user's personal
    tokens are kept only if they also help there. Users with too short a history get fewer.
    """
    out = SearchExamples(list(users), [], [], [], [])
    for u, (history, profile) in enumerate(zip(histories, profiles, strict=True)):
        n = min(per_user, len(history) - 1)
        for back in range(n, 0, -1):
            prefix = list(history[: len(history) - back])
            out.owner.append(u)
            out.fields.append(PromptFields(prefix, list(profile), catalog.taste_words(prefix)))
            out.targets.append(history[len(history) - back])
            out.held_out.append(back <= held_out_per_user and n > held_out_per_user)
    return out


class SelectionSettings(Protocol):
    """What a strategy's config says about its selection examples."""

    @property
    def selection_per_user(self) -> int: ...

    @property
    def held_out_per_user(self) -> int: ...


def training_examples(
    splits: Splits,
    users: Sequence[int] | np.ndarray,
    profiles: list[list[str]],
    catalog: ItemCatalog,
    settings: SelectionSettings,
) -> SearchExamples:
    """Selection examples of these user indices from their training sequences only."""
    return build_examples(
        [splits.users[u] for u in users],
        [splits.train[u] for u in users],
        [profiles[u] for u in users],
        catalog,
        settings.selection_per_user,
        settings.held_out_per_user,
    )


def users_to_search(splits: Splits, group: str, done: Container[str]) -> list[int]:
    """User indices of `group` (all, warm, cold; none: nobody) not searched yet: a resumed
    run goes on where it stopped."""
    if group == "none":
        return []
    return [u for u in splits.user_indices(group) if splits.users[u] not in done]

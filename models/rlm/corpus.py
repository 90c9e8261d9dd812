"""Training sequences for the RLM: `[prompt words][item_1 ... item_n]`, a target at every item.

Each warm user's training sequence is cut into windows of up to `max_history + 1` items (from the
end backwards, so every transition is trained once per epoch). Every item position predicts the
next item; the prompt's last word predicts the user's first item. Several templates and random
field dropping make the model read the prompt words without depending on them.

Taste words summarise items, so they must never summarise an item a position predicts: a
window's taste is computed from the items before a random cut `c` (its first 1..taste_cut_max
items, plus everything before the window), and only targets from the cut on carry a loss.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from promptrec.models.data.splits import Splits
from promptrec.models.rlm.config import CorpusConfig
from promptrec.models.templates import PromptFields, content_tokens, render_parts, templates_for
from promptrec.models.text import item_token
from promptrec.models.user_context import TASTE_WORDS, ItemCatalog

IGNORE = -100  # a position without a target
CONTENT_BATCH_FACTOR = 4  # content documents per batch, in window batches: they are a few words


@dataclass
class Sample:
    """One training row: `prefix` words, then `items` as item tokens.

    `targets[0]` is the item the prefix's last position predicts, `targets[k + 1]` the item
    after `items[k]`; IGNORE where a position carries no loss."""

    prefix: list[str]
    items: list[int]
    targets: list[int]
    user: int | None = None  # user index the sample came from (None: item content document)

    @property
    def tokens(self) -> list[str]:
        return [*self.prefix, *(item_token(i) for i in self.items)]


def user_windows(sequence: list[int], max_history: int) -> list[tuple[int, int]]:
    """[start, end) of windows of up to max_history + 1 items, newest first; consecutive
    windows share one item, so every transition lies in exactly one window."""
    out, end = [], len(sequence)
    while end >= 2:
        out.append((max(0, end - max_history - 1), end))
        end -= max_history
    return out


class TrainingCorpus:
    """Builds one epoch of samples at a time from the warm users' training sequences."""

    def __init__(
        self,
        splits: Splits,
        catalog: ItemCatalog,
        profiles: list[list[str]],
        max_history: int,
        config: CorpusConfig | None = None,
    ) -> None:
        self.splits, self.catalog, self.profiles = splits, catalog, profiles
        self.max_history, self.config = max_history, config or CorpusConfig()
        self.templates = templates_for("sequential")
        self.windows: list[tuple[int, int, int]] = [
            (int(u), start, end)
            for u in np.flatnonzero(~splits.cold)
            for start, end in user_windows(splits.train[u], max_history)
        ]

    def batches_per_epoch(self, batch_size: int) -> int:
        n_content = self.config.content_repeats * self.splits.n_items
        return math.ceil(len(self.windows) / batch_size) + math.ceil(
            n_content / (CONTENT_BATCH_FACTOR * batch_size)
        )

    def epoch(self, rng: np.random.Generator, batch_size: int) -> list[list[Sample]]:
        """One epoch's batches in random order. A batch pads to its longest row, so rows of
        similar length are batched together: windows sorted by length (ties at random), and
        content documents (a few words) apart from windows."""
        order = rng.permutation(len(self.windows))
        windows = [self._window_sample(self.windows[i], rng) for i in order]
        windows.sort(key=lambda s: len(s.items))  # stable: ties keep the random order
        content = [
            self._content_sample(i, rng)
            for _ in range(self.config.content_repeats)
            for i in rng.permutation(self.splits.n_items)
        ]
        batches = [windows[lo : lo + batch_size] for lo in range(0, len(windows), batch_size)]
        step = CONTENT_BATCH_FACTOR * batch_size
        batches += [content[lo : lo + step] for lo in range(0, len(content), step)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _window_sample(self, window: tuple[int, int, int], rng: np.random.Generator) -> Sample:
        u, start, end = window
        seq = self.splits.train[u]
        items = seq[start : end - 1]
        # targets[k] is seq[start + k], predicted from the items before it
        targets = list(seq[start:end]) if start == 0 else [IGNORE, *seq[start + 1 : end]]
        taste: list[str] = []
        if rng.random() >= self.config.field_drop:
            cut = start + int(rng.integers(1, min(self.config.taste_cut_max, end - start - 1) + 1))
            taste = self.catalog.taste_words(seq[:cut], TASTE_WORDS)
            # Only targets at index >= cut: the taste has seen none of them.
            targets = [t if start + k >= cut else IGNORE for k, t in enumerate(targets)]
        fields = PromptFields(
            history=[],
            profile=self.profiles[u] if rng.random() >= self.config.field_drop else [],
            taste=taste,
        )
        template = self.templates[rng.integers(len(self.templates))]
        prefix, _ = render_parts(template, fields, 0)
        return Sample(prefix, list(items), targets, user=u)

    def _content_sample(self, item: int, rng: np.random.Generator) -> Sample:
        title, genres = self.catalog.title_words[item], self.catalog.genre_words[item]
        # Drop title or genres sometimes, so either alone points at the item.
        r = rng.random()
        if r < 0.2:
            title = []
        elif r < 0.4:
            genres = []
        return Sample(content_tokens(title, genres), [], [item])


def vocabulary_words(catalog: ItemCatalog, profiles: list[list[str]]) -> set[str]:
    words: Counter[str] = Counter()
    for ws in catalog.title_words + catalog.genre_words + profiles:
        words.update(ws)
    return set(words)

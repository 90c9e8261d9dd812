"""Training samples for the RLM: several phrasings per task, words that carry meaning.

Every sample's first decoded token is trained against a *soft* target over the next few items of
the sequence (not just the next one), so one pass teaches several items; fields are dropped at
random so the model works with or without profile and taste words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from models.baselines.markov import MarkovScorer
from models.data.splits import Splits
from models.templates import PromptFields, content_tokens, render_tokens, templates_for
from models.user_context import TASTE_WORDS, ItemCatalog


@dataclass(frozen=True)
class CorpusConfig:
    next_items: int = 5
    """Items after the cut that share the soft target."""
    target_decay: float = 0.5
    """Weight of the j-th next item is decay**j before normalisation (the next item weighs most)."""
    field_drop: float = 0.3
    """Probability that the profile, and independently the taste, is left out of a prompt."""
    short_history: float = 0.25
    """Probability that only the last 1-4 items are shown; the taste words still summarise the
    whole history, so the model must learn to read them."""
    direct_fraction: float = 0.15
    """Share of history cuts phrased as the direct task (pick among candidates)."""
    direct_candidates: int = 20
    content_repeats: int = 1
    """Item content documents (title and genre words -> item token) per item per epoch."""
    cut_fraction: float = 1.0
    """Share of all history cut points used per epoch (a fresh random subset each epoch)."""
    teacher_weight: float = 0.0
    """Share of a sequential sample's soft target given to an item-transition teacher (the
    Markov baseline fitted on the same training sequences): dense supervision over the items
    that usually follow the shown history, where the observed next items name only a few."""
    teacher_items: int = 50
    """The teacher's most likely items that share its weight (renormalised)."""

    def __post_init__(self) -> None:
        if not 0 <= self.teacher_weight <= 1:
            raise ValueError(f"teacher weight must be in [0, 1], not {self.teacher_weight}")
        if self.teacher_items < 1:
            raise ValueError(f"teacher items must be at least 1, not {self.teacher_items}")


@dataclass
class Sample:
    tokens: list[str]
    targets: list[int]
    weights: list[float]
    candidates: list[int] | None = None
    user: int | None = None  # user index the sample came from (None: item content document)


class TrainingCorpus:
    """Builds one epoch of samples at a time from the warm users' training sequences."""

    def __init__(
        self,
        splits: Splits,
        catalog: ItemCatalog,
        profiles: list[list[str]],
        max_history: int,
        config: CorpusConfig = CorpusConfig(),
    ) -> None:
        self.splits, self.catalog, self.profiles = splits, catalog, profiles
        self.max_history, self.config = max_history, config
        self.seq_templates = templates_for("sequential")
        self.direct_templates = templates_for("direct")
        self.cuts: list[tuple[int, int]] = [
            (u, t) for u in np.flatnonzero(~splits.cold) for t in range(1, len(splits.train[u]))
        ]
        self.tastes = self._taste_per_cut()
        decay = config.target_decay ** np.arange(config.next_items)
        self.decay = decay / decay.sum()
        self.teacher = (
            MarkovScorer().fit(
                [splits.train[u] for u in np.flatnonzero(~splits.cold)], splits.n_items
            )
            if config.teacher_weight > 0
            else None
        )

    def _taste_per_cut(self) -> dict[tuple[int, int], list[str]]:
        # Taste summarises the whole prefix, beyond the history window the prompt shows.
        out = {}
        for u in np.flatnonzero(~self.splits.cold):
            seq = self.splits.train[u]
            for t in range(1, len(seq)):
                out[(u, t)] = self.catalog.taste_words(seq[:t], TASTE_WORDS)
        return out

    def epoch(self, rng: np.random.Generator) -> list[Sample]:
        cfg = self.config
        n_cuts = round(cfg.cut_fraction * len(self.cuts))
        chosen = rng.choice(len(self.cuts), size=n_cuts, replace=False)
        samples = [self._history_sample(self.cuts[c], rng) for c in chosen]
        for _ in range(cfg.content_repeats):
            samples.extend(self._content_sample(i, rng) for i in range(self.splits.n_items))
        order = rng.permutation(len(samples))
        return [samples[i] for i in order]

    def _history_sample(self, cut: tuple[int, int], rng: np.random.Generator) -> Sample:
        u, t = cut
        seq = self.splits.train[u]
        shown = seq[:t]
        if rng.random() < self.config.short_history:
            shown = shown[-int(rng.integers(1, 5)) :]
        fields = PromptFields(
            history=shown,
            profile=self.profiles[u] if rng.random() >= self.config.field_drop else [],
            taste=self.tastes[cut] if rng.random() >= self.config.field_drop else [],
        )
        if rng.random() < self.config.direct_fraction:
            return self._direct_sample(u, fields, seq[t], rng)
        nxt = seq[t : t + self.config.next_items]
        weights = self.decay[: len(nxt)] / self.decay[: len(nxt)].sum()
        targets, weights = self._with_teacher(shown, nxt, weights)
        template = self.seq_templates[rng.integers(len(self.seq_templates))]
        tokens = render_tokens(template, fields, self.max_history)
        return Sample(tokens, targets, weights, user=u)

    def _with_teacher(
        self, shown: list[int], nxt: list[int], weights: np.ndarray
    ) -> tuple[list[int], list[float]]:
        if self.teacher is None:
            return list(nxt), weights.tolist()
        alpha = self.config.teacher_weight
        scores = self.teacher.score([shown])[0]
        k = min(self.config.teacher_items, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        share = alpha * scores[top] / scores[top].sum()
        target = dict(zip(top.tolist(), share.tolist(), strict=True))
        for item, w in zip(nxt, (1 - alpha) * weights, strict=True):
            target[item] = target.get(item, 0.0) + float(w)
        return list(target), list(target.values())

    def _direct_sample(
        self, u: int, fields: PromptFields, target: int, rng: np.random.Generator
    ) -> Sample:
        # Never the user's held-out items: a negative shown in a training prompt would leak them.
        seen = {*self.splits.train[u], self.splits.valid[u], self.splits.test[u]}
        negatives: list[int] = []
        while len(negatives) < self.config.direct_candidates - 1:
            i = int(rng.integers(self.splits.n_items))
            if i != target and i not in seen and i not in negatives:
                negatives.append(i)
        candidates = [target, *negatives]
        rng.shuffle(candidates)
        fields = PromptFields(fields.history, fields.profile, fields.taste, candidates)
        template = self.direct_templates[rng.integers(len(self.direct_templates))]
        tokens = render_tokens(template, fields, self.max_history)
        return Sample(tokens, [target], [1.0], candidates, user=u)

    def _content_sample(self, item: int, rng: np.random.Generator) -> Sample:
        title, genres = self.catalog.title_words[item], self.catalog.genre_words[item]
        # Drop title or genres sometimes, so either alone points at the item.
        r = rng.random()
        if r < 0.2:
            title = []
        elif r < 0.4:
            genres = []
        return Sample(content_tokens(title, genres), [item], [1.0])


def vocabulary_words(catalog: ItemCatalog, profiles: list[list[str]]) -> set[str]:
    words: Counter[str] = Counter()
    for ws in catalog.title_words + catalog.genre_words + profiles:
        words.update(ws)
    return set(words)

"""The words that describe a user to the RLM: profile (age band, gender, occupation) and taste."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from promptrec.models.data.splits import Splits
from promptrec.models.text import words

AGE_BANDS = ((18, "teen"), (30, "twenties"), (40, "thirties"), (50, "forties"), (60, "fifties"))
GENDER_WORDS = {"m": "male", "f": "female"}
TASTE_WORDS = 3


def age_band(age: float | None) -> str | None:
    if age is None or age != age:  # None or NaN: unknown
        return None
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return "senior"


def profile_words(age: float | None, gender: str | None, occupation: str | None) -> list[str]:
    out = []
    band = age_band(age)
    if band:
        out.append(band)
    gender_word = GENDER_WORDS.get(
        str(gender or "").strip().lower(), str(gender or "").strip().lower()
    )
    if gender_word:
        out.extend(words(gender_word))
    out.extend(words(str(occupation or "")))
    return [w for w in out if w != "none"]


@dataclass(frozen=True)
class ItemCatalog:
    """The model's items (internal index k is token item_k): ids, titles, and the title and
    genre words that prompts are made of."""

    item_ids: list[str]
    titles: list[str]
    title_words: list[list[str]]
    genre_words: list[list[str]]
    genre_share: dict[str, float]  # share of each genre word over the catalogue's interactions

    @cached_property
    def index_of(self) -> dict[str, int]:
        return {item: k for k, item in enumerate(self.item_ids)}

    @classmethod
    def build(cls, items: pd.DataFrame, splits: Splits) -> ItemCatalog:
        """For training and evaluation: genre shares over the warm users' training items."""
        counts: Counter[int] = Counter()
        for u in np.flatnonzero(~splits.cold):
            counts.update(splits.train[u])
        return cls.from_counts(splits.item_ids, items, counts)

    @classmethod
    def from_counts(
        cls, item_ids: list[str], items: pd.DataFrame, interactions: Mapping[int, int]
    ) -> ItemCatalog:
        """`items`: item, title, genres for (some of) `item_ids`; `interactions`: interactions
        per item index, which the genre shares (that taste words lift against) are taken over."""
        meta = items.set_index("item") if len(items) else None
        titles, title_words, genres = [], [], []
        for external in item_ids:
            row = meta.loc[external] if meta is not None and external in meta.index else None
            titles.append(str(row["title"] or "") if row is not None else "")
            title_words.append(words(str(row["title"])) if row is not None else [])
            raw = str(row["genres"]) if row is not None and row["genres"] else ""
            genres.append(
                [w for g in raw.split("|") if g and g != "unknown" for w in _genre_word(g)]
            )
        genre_counts: Counter[str] = Counter()
        for k, n in interactions.items():
            for g in genres[k]:
                genre_counts[g] += n
        total = sum(genre_counts.values()) or 1
        share = {g: c / total for g, c in genre_counts.items()}
        return cls(list(item_ids), titles, title_words, genres, share)

    @cached_property
    def _genre_counts(self) -> tuple[list[str], np.ndarray]:
        """Genre words, and per item how often each occurs in the item's genres."""
        vocab = sorted({g for genres in self.genre_words for g in genres})
        column = {g: j for j, g in enumerate(vocab)}
        matrix = np.zeros((len(self.genre_words), len(vocab)), dtype=np.int64)
        for i, genres in enumerate(self.genre_words):
            for g in genres:
                matrix[i, column[g]] += 1
        return vocab, matrix

    def taste_words(self, history: list[int], k: int = TASTE_WORDS) -> list[str]:
        """The k genres most over-represented in `history` relative to the catalogue (lift)."""
        vocab, matrix = self._genre_counts
        if not len(history) or not vocab:
            return []
        # One indexed sum over the history (this runs on every served request).
        totals = matrix[np.asarray(history, dtype=np.int64)].sum(axis=0)
        counts = {vocab[j]: int(totals[j]) for j in np.flatnonzero(totals)}
        total = sum(counts.values())
        if not total:
            return []
        lift = {
            g: (c / total) / self.genre_share.get(g, 1.0 / len(counts)) for g, c in counts.items()
        }
        # Require a few occurrences so one odd film does not define a taste.
        ranked = sorted(lift, key=lambda g: (-(lift[g] if counts[g] >= 2 else 0.0), g))
        return ranked[:k]


def _genre_word(genre: str) -> list[str]:
    # "Children's" -> "children", "Sci-Fi" -> "scifi", "Film-Noir" -> "noir": one word per genre.
    special = {"children's": ["children"], "sci-fi": ["scifi"], "film-noir": ["noir"]}
    key = genre.strip().lower()
    return special.get(key, words(key))


def user_profiles(users: pd.DataFrame, splits: Splits) -> list[list[str]]:
    """Profile words per user index (empty when the data has no user metadata)."""
    if not len(users):
        return [[] for _ in splits.users]
    table = users.set_index("user")
    out = []
    for user in splits.users:
        if user in table.index:
            row = table.loc[user]
            out.append(profile_words(float(row["age"]), str(row["gender"]), str(row["occupation"])))
        else:
            out.append([])
    return out

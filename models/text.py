"""Word-level text normalisation shared by the tokenizer, templates and item documents."""

from __future__ import annotations

import re

ITEM_TOKEN_PREFIX = "item_"
# One pre-tokenisation rule for everything: item tokens whole, words and numbers, single symbols.
TOKEN_PATTERN = r"item_\d+|[a-z0-9]+|[^\sa-z0-9]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_WORD_RE = re.compile(r"^[a-z]+$")


def item_token(index: int) -> str:
    return f"{ITEM_TOKEN_PREFIX}{index}"


def words(text: str) -> list[str]:
    """Lower-cased tokens of `text` as the tokenizer will see them."""
    return _TOKEN_RE.findall(text.lower())


def is_word(token: str) -> bool:
    """A natural-language word: the search space for prompt tokens (no items, numbers, symbols)."""
    return bool(_WORD_RE.match(token))

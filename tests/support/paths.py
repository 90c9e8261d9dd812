"""Where the repository and what it ships are."""

from __future__ import annotations

import contextlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = REPO / "artifacts" / "rlm-small"
SHIPPED_PROMPTS = REPO / "artifacts" / "prompts" / "sequential.json"
MOVIELENS = REPO / "data" / "ml-100k"  # fetched by `make run` (`promptrec data fetch`)


def shown(path: Path) -> str:
    """A path relative to the repository where it lies inside it (for reports)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)

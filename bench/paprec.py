"""Benchmark: PAP-REC prompts vs manual templates, personal search speed, and the reference loop.

    python -m bench.paprec --model artifacts/rlm-small --data data/ml-100k \
        --prompts artifacts/prompts/sequential.json --out bench/results/paprec.json

Runs (or resumes) `promptrec search` into --prompts, scores manual templates, "auto" (task
tokens) and "auto+personal" on test for warm/cold/all users with paired-bootstrap CIs against
the best manual template (chosen on validation), times incremental personal search, and times
our acceptance (screened, and scoring every candidate fully) against PAP-REC's beam-search
acceptance, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.paprec_reference import BeamSearchAcceptance
from promptrec.cli.options import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_PROMPTS
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.metrics import paired_bootstrap_ci
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.pipeline import run_search
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.selection import SearchExamples, training_examples
from promptrec.models.report import (
    best_by_validation,
    load_context,
    score_prompt_set,
    score_rlm_template,
    sequential_templates,
)
from promptrec.models.templates import PromptFields

METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")
SELECTION_METRICS = ("NDCG@10", "HR@10")
"""The selection-set metric the acceptance rules are compared on (the original surrogate)."""


def quality_rows(methods, splits, best_manual):
    rows = []
    for m in methods:
        per_user = m.per_user[("test", "full")]
        for group in ("warm", "cold", "all"):
            idx = splits.user_indices(group)
            row = {"method": m.method, "users": group, "n": len(idx)}
            row.update({k: round(float(per_user[k][idx].mean()), 5) for k in METRICS})
            ref = best_manual.per_user[("test", "full")]["NDCG@10"][idx]
            ours = per_user["NDCG@10"][idx]
            row["ci95_NDCG@10_vs_best_manual"] = [
                round(x, 5) for x in paired_bootstrap_ci(ours, ref)
            ]
            row["relative_NDCG@10_vs_best_manual"] = round(float(ours.mean() / ref.mean() - 1), 4)
            rows.append(row)
    return rows


def personal_speed(
    lm, splits, catalog, profiles, task_tokens, config, n_users=256, passes=3
) -> dict:
    """Incremental personal search of the cold users, timed `passes` times (the median counts:
    this machine's speed drifts by up to 2x within minutes)."""
    users = splits.user_indices("cold")[:n_users]
    examples = training_examples(splits, users, profiles, catalog, config)
    seconds = []
    for _ in range(passes):
        search = PaprecSearch(lm, config, progress=False)
        start = time.perf_counter()
        outcomes = search.search_personal(examples, task_tokens)
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {
        "personal_users_per_min": round(60 * len(users) / median, 1),
        "personal_users_timed": len(users),
        "personal_seconds": round(median, 2),
        "personal_seconds_per_pass": [round(x, 2) for x in seconds],
        "kept": int(sum(o.kept for o in outcomes.values())),
    }


def acceptance_speed(lm, splits, catalog, profiles, config) -> dict:
    """Acceptance rules side by side in one run, one cycle of task rounds each from the same
    start, on the reference's examples (every warm user's validation item): ours (screened, then
    rechecked), ours without the recheck (the rule before it), ours scoring every candidate on
    every example, and PAP-REC's beam search. Only acceptance is timed (gradients and
    candidates are the same code in all of them)."""
    users = splits.user_indices("warm")
    examples = SearchExamples(
        users=[splits.users[u] for u in users],
        owner=list(range(len(users))),
        fields=[
            PromptFields(splits.train[u], profiles[u], catalog.taste_words(splits.train[u]))
            for u in users
        ],
        targets=[splits.valid[u] for u in users],
        held_out=[False] * len(users),
    )
    every = replace(config, screen_fraction=None)
    # Every rule's result is scored on one fixed metric, whatever surrogate its search uses.
    exact = PaprecSearch(lm, replace(every, metrics=SELECTION_METRICS), progress=False)
    exact_batch = exact.scorer.prepare(examples, range(len(examples)))
    personal = np.zeros((len(users), 0), dtype=np.int64)
    runs = {}
    for name, cls, cfg in (
        ("ours", PaprecSearch, config),
        ("ours_no_recheck", PaprecSearch, replace(config, recheck_fraction=None)),
        ("ours_every_candidate", PaprecSearch, every),
        ("reference", BeamSearchAcceptance, every),
    ):
        search = cls(lm, cfg, progress=False)
        batch = search.scorer.prepare(examples, range(len(examples)))
        task = search.scorer.ids([cfg.init_token] * cfg.task_tokens)
        run = {"search": search, "batch": batch, "task": task, "seconds": 0.0, "candidates": 0}
        run["best"] = search.task_surrogate(batch, lambda j, t=task: t)
        run["accepted"] = 0
        search.accept_best = _timed(search.accept_best, run)
        runs[name] = run
    # Interleaved, one round of each rule in turn, so drift in machine speed hits all three.
    for position in range(config.task_tokens):
        for run in runs.values():
            run["best"], took = run["search"].task_round(
                run["batch"], run["task"], personal, position, run["best"]
            )
            run["accepted"] += took
    results = {}
    for name, run in runs.items():
        final = exact.task_surrogate(exact_batch, lambda j, t=run["task"]: t)
        results[name] = {
            "seconds_per_flip": round(run["seconds"] / run["candidates"], 4),
            "candidates": run["candidates"],
            "accepted": run["accepted"],
            "examples": len(examples),
            "tokens": run["search"].scorer.tokens(run["task"]),
            "selection_" + "+".join(SELECTION_METRICS): round(final, 5),
        }
        print(name, results[name], flush=True)
    return results


def _timed(accept_best, run: dict):
    """accept_best, adding its time and candidate count to `run`."""

    def timed(batch, current, trials, personal, best):
        t0 = time.perf_counter()
        out = accept_best(batch, current, trials, personal, best)
        run["seconds"] += time.perf_counter() - t0
        run["candidates"] += len(trials)
        return out

    return timed


def speedup(flips: dict, ours: str) -> float:
    return round(flips["reference"]["seconds_per_flip"] / flips[ours]["seconds_per_flip"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paprec.json"))
    parser.add_argument(
        "--acceptance-only",
        action="store_true",
        help="only time the acceptance rules (prints them; writes nothing)",
    )
    args = parser.parse_args()

    data = InteractionData.load(args.data)
    splits = make_splits(data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    config = PaprecConfig()
    if args.acceptance_only:
        flips = acceptance_speed(lm, splits, catalog, profiles, config)
        print(
            f"speedup {speedup(flips, 'ours')}x, every candidate "
            f"{speedup(flips, 'ours_every_candidate')}x, "
            f"no recheck {speedup(flips, 'ours_no_recheck')}x"
        )
        return
    started = time.perf_counter()
    # Always a fresh search: resuming a finished prompt set would time nothing.
    prompt_set = run_search(lm, splits, catalog, profiles, args.prompts, config, resume=False)
    search_seconds = time.perf_counter() - started

    manual = [score_rlm_template(lm, splits, catalog, profiles, t) for t in sequential_templates()]
    for m in manual:
        m.method = "manual:" + m.method.split(":", 1)[1]
    best_manual = best_by_validation(manual)
    auto = [score_prompt_set(lm, splits, catalog, profiles, prompt_set, p) for p in (False, True)]
    rows = quality_rows([*manual, *auto], splits, best_manual)

    kept = [(u, o) for u, o in prompt_set.state.outcomes.items() if o.kept]
    examples = [
        {
            "user": u,
            "task_tokens": " ".join(prompt_set.state.task_tokens),
            "personal_tokens": " ".join(o.tokens),
        }
        for u, o in kept[:8]
    ]
    speed = personal_speed(lm, splits, catalog, profiles, prompt_set.state.task_tokens, config)
    flips = acceptance_speed(lm, splits, catalog, profiles, config)
    speed.update(
        {
            "device": str(lm.device),
            "cpu_threads": torch.get_num_threads(),
            "ours_seconds_per_flip": flips["ours"]["seconds_per_flip"],
            "reference_seconds_per_flip": flips["reference"]["seconds_per_flip"],
            "speedup": speedup(flips, "ours"),
            "speedup_every_candidate": speedup(flips, "ours_every_candidate"),
            "speedup_no_recheck": speedup(flips, "ours_no_recheck"),
            "acceptance_runs": flips,
            "full_search_seconds": round(search_seconds, 1),
        }
    )
    report = {
        "rows": rows,
        "best_manual": best_manual.method,
        "task_tokens": prompt_set.state.task_tokens,
        "users_with_personal_tokens": len(kept),
        "users_searched": len(prompt_set.state.outcomes),
        "examples": examples,
        "speed": speed,
    }
    header = f"{'method':<16}{'users':<6}" + "".join(f"{m:>9}" for m in METRICS) + "  rel.NDCG@10"
    print(header)
    for r in rows:
        print(
            f"{r['method']:<16}{r['users']:<6}"
            + "".join(f"{r[m]:>9.4f}" for m in METRICS)
            + f"  {r['relative_NDCG@10_vs_best_manual']:+.1%}"
        )
    print(json.dumps(speed, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

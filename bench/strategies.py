"""Benchmark: prompt strategies side by side on one model (#18, #19): the best single fixed
prompt, PAP-REC, RPP's policy alone and with per-user refinement, soft prompts composed and
composed + fitted.

    python -m bench.strategies --threads 1

Every fixed combination of RPP's slots is scored on validation and the best (all users'
NDCG@10) is the reference. Then, on test leave-one-out (full ranking, all/warm/cold users) and on
the cold stream (every prediction of every cold user from the 3rd interaction on, per-user
means), each strategy minus that reference, with user-level paired bootstrap CIs, and what each
costs per user; soft prompts also minus the same RLM without them (the plain served prompt,
`served`). Written to bench/results/strategies.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.strategies_soft import soft_section
from bench.strategies_stream import (
    Checkpoints,
    checkpoint_examples,
    fixed_scorer,
    paprec_checkpoint_search,
    paprec_scorer,
    rpp_scorer,
    search_checkpoints,
)
from promptrec.models.cold_stream import cold_stream, compare, evaluate_stream
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import Splits, make_splits
from promptrec.models.evaluation import rlm_scores, user_fields
from promptrec.models.metrics import metric, paired_bootstrap_ci, target_ranks
from promptrec.models.model_context import load_context
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PromptSet
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.pipeline import policy_users
from promptrec.models.prompts.rpp.search import RppSearch
from promptrec.models.prompts.rpp.slots import DEFAULT_CHOICE, all_choices, choice_label
from promptrec.models.prompts.selection import training_examples
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.stream_report import stream_table

METRICS = ("NDCG@10", "HR@10")
GROUPS = ("all", "warm", "cold")


def per_user(ranks: np.ndarray) -> dict[str, np.ndarray]:
    return {m: metric(m, ranks) for m in METRICS}


def loo_rows(methods: dict[str, dict], splits: Splits, reference: str) -> list[dict]:
    """Test NDCG@10 / HR@10 per user group, and each method minus `reference`, paired CI."""
    rows = []
    for name, scores in methods.items():
        for group in GROUPS:
            idx = splits.user_indices(group)
            ours, ref = scores["NDCG@10"][idx], methods[reference]["NDCG@10"][idx]
            row = {"method": name, "users": group, "n": len(idx)}
            row.update({m: round(float(scores[m][idx].mean()), 5) for m in METRICS})
            if name != reference:
                row["diff_NDCG@10"] = round(float((ours - ref).mean()), 5)
                row["relative"] = round(float(ours.mean() / ref.mean() - 1), 4)
                row["ci95_diff_NDCG@10"] = [round(x, 5) for x in paired_bootstrap_ci(ours, ref)]
            rows.append(row)
    return rows


def apply_latency(search: RppSearch, policy, fields, single: int = 100) -> dict:
    """The policy applied to users it never saw: batched (ms per user), and one user at a time
    (median and 95th percentile), RLM state pass included."""
    search.choose(policy, fields[:8])  # warm-up (the traced graph, allocations)
    t0 = time.perf_counter()
    search.choose(policy, fields)
    batched = (time.perf_counter() - t0) / len(fields) * 1e3
    one = []
    for f in fields[:single]:
        t0 = time.perf_counter()
        search.choose(policy, [f])
        one.append((time.perf_counter() - t0) * 1e3)
    return {
        "users": len(fields),
        "batched_ms_per_user": round(batched, 3),
        "single_user_ms_median": round(float(np.median(one)), 3),
        "single_user_ms_p95": round(float(np.quantile(one, 0.95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/rlm-small"))
    parser.add_argument("--data", type=Path, default=Path("data/ml-100k"))
    parser.add_argument("--prompts", type=Path, default=Path("artifacts/prompts/sequential.json"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/strategies.json"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--stream-first", type=int, default=Checkpoints.first)
    parser.add_argument("--stream-every", type=int, default=Checkpoints.every)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick check of the script: a short policy training and composer tuning on 100 "
        "users, 20 cold users in the stream (figures not comparable)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = InteractionData.load(args.data)
    splits = make_splits(data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    prompt_set = PromptSet.load(args.prompts)
    if prompt_set.model_fingerprint != lm.fingerprint():
        raise SystemExit(f"{args.prompts} was searched on another model")
    config = RppConfig(iterations=20, train_users=100) if args.smoke else RppConfig()
    soft_config = SoftConfig(epochs=1, train_users=100) if args.smoke else SoftConfig()
    rpp = RppSearch(lm, config, progress=True)
    users = list(range(len(splits.users)))
    cost: dict = {"device": str(lm.device), "cpu_threads": torch.get_num_threads()}

    # ---- the best fixed prompt, on validation -------------------------------------------------
    t0 = time.perf_counter()
    valid_fields = user_fields(splits, catalog, profiles, users, "valid")
    valid_targets = [splits.valid[u] for u in users]
    choices = all_choices()
    valid = {c: rpp.scorer.score(valid_fields, valid_targets, [c] * len(users))[0] for c in choices}
    best = max(choices, key=lambda c: (valid[c].mean(), c == DEFAULT_CHOICE))
    cost["fixed_search_seconds"] = round(time.perf_counter() - t0, 1)
    ranked = sorted(choices, key=lambda c: -valid[c].mean())
    fixed = {
        "tried": len(choices),
        "best": choice_label(best),
        "served": choice_label(DEFAULT_CHOICE),
        "valid_NDCG@10_top5": {
            choice_label(c): round(float(valid[c].mean()), 5) for c in ranked[:5]
        },
        "valid_NDCG@10_served": round(float(valid[DEFAULT_CHOICE].mean()), 5),
    }
    print(f"best fixed prompt of {len(choices)} on validation: {fixed['best']}", flush=True)

    # ---- RPP: the policy on warm users' selection items ---------------------------------------
    t0 = time.perf_counter()
    train_examples = training_examples(
        splits, policy_users(splits, config), profiles, catalog, config
    )
    train_cache = rpp.cache(train_examples)
    policy, log = rpp.train(train_examples, train_cache)
    training = {
        **log.as_dict(),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "examples_scored": train_cache.passes,
    }
    del training["mean_reward"]

    # ---- test leave-one-out -------------------------------------------------------------------
    test_fields = user_fields(splits, catalog, profiles, users, "test")
    test_targets = np.array([splits.test[u] for u in users])
    histories = [f.history for f in test_fields]

    def ranks_of(choices_per_user) -> dict[str, np.ndarray]:
        return per_user(rpp.scorer.ranks(test_fields, test_targets, choices_per_user)[0])

    state = prompt_set.state
    paprec_prompts = [state.prompt_for(splits.users[u]) for u in users]
    paprec_scores = rlm_scores(lm, test_fields, prompt_set.config.template, paprec_prompts)
    policy_choices = rpp.choose(policy, test_fields)
    t0 = time.perf_counter()
    refined = rpp.refine(policy, training_examples(splits, users, profiles, catalog, config))
    refine_seconds = time.perf_counter() - t0
    with_refinement = [
        r.candidate if (r := refined.get(splits.users[u])) and r.kept else policy_choices[u]
        for u in users
    ]
    reference = "fixed"  # the best fixed prompt, named in the report's "fixed"
    methods = {
        reference: ranks_of([best] * len(users)),
        "paprec": per_user(target_ranks(paprec_scores, test_targets, histories)),
        "rpp": ranks_of(policy_choices),
        "rpp+refine": ranks_of(with_refinement),
    }
    if best != DEFAULT_CHOICE:
        methods["served"] = ranks_of([DEFAULT_CHOICE] * len(users))

    # ---- soft prompts: tuned, fitted, and their cold-stream scorers ---------------------------
    stream = cold_stream(splits, splits.user_indices("cold")[:20] if args.smoke else None)
    checkpoints = Checkpoints(args.stream_first, args.stream_every)
    soft_test, soft_scorers, soft = soft_section(
        lm, splits, catalog, profiles, stream, checkpoints, soft_config
    )
    for name, scores in soft_test.items():
        methods[name] = per_user(target_ranks(scores, test_targets, histories))
    plain = "served" if "served" in methods else reference
    soft["test_vs_served"] = [
        r
        for r in loo_rows({n: methods[n] for n in (plain, *soft_test)}, splits, plain)
        if r["method"] != plain
    ]
    cost.update(soft.pop("cost"))
    test_rows = loo_rows(methods, splits, reference)
    cost["rpp_policy_training_seconds"] = training["total_seconds"]
    cost["rpp_refine_seconds_per_user"] = round(refine_seconds / len(users), 4)
    cost["rpp_refined_kept"] = sum(r.kept for r in refined.values())
    cold = splits.user_indices("cold")
    cost["rpp_apply"] = apply_latency(rpp, policy, [test_fields[u] for u in cold])

    # ---- cold stream --------------------------------------------------------------------------
    keys, examples = checkpoint_examples(stream, splits.users, profiles, catalog, checkpoints, 4, 1)
    paprec = PaprecSearch(lm, prompt_set.config)
    personal, paprec_seconds = search_checkpoints(
        keys, examples, paprec_checkpoint_search(paprec, state.task_tokens)
    )
    refined_stream, rpp_seconds = search_checkpoints(
        keys, examples, lambda ex: rpp.refine(policy, ex)
    )
    cost["stream_checkpoint_searches"] = len(keys)
    cost["stream_paprec_seconds_per_search"] = round(paprec_seconds / len(keys), 4)
    cost["stream_rpp_refine_seconds_per_search"] = round(rpp_seconds / len(keys), 4)
    scorers = {
        reference: fixed_scorer(rpp.scorer, profiles, catalog, best),
        "paprec": paprec_scorer(
            lm, profiles, catalog, prompt_set.config.template, state.task_tokens, personal
        ),
        "rpp": rpp_scorer(rpp, policy, profiles, catalog),
        "rpp+refine": rpp_scorer(rpp, policy, profiles, catalog, refined_stream),
    }
    if best != DEFAULT_CHOICE:
        scorers["served"] = fixed_scorer(rpp.scorer, profiles, catalog, DEFAULT_CHOICE)
    scorers.update(soft_scorers)
    results = {}
    for name, fn in scorers.items():
        t0 = time.perf_counter()
        results[name] = evaluate_stream(stream, fn, method=name, progress=True)
        cost[f"stream_{name}_scoring_seconds"] = round(time.perf_counter() - t0, 1)
    base = results[reference]
    stream_rows = [r.summary(None if n == reference else base) for n, r in results.items()]
    soft["cold_stream_vs_served"] = {
        n: compare(results[n], results[plain]).as_dict() for n in soft_scorers
    }

    targets = {
        "cold_stream_rpp_ci_above_zero": {
            n: compare(results[n], base).ci95[0] > 0 for n in ("rpp", "rpp+refine")
        },
        "warm_test_rpp_point_at_least_fixed": {
            n: bool(
                methods[n]["NDCG@10"][splits.user_indices("warm")].mean()
                >= methods[reference]["NDCG@10"][splits.user_indices("warm")].mean()
            )
            for n in ("rpp", "rpp+refine")
        },
        "apply_ms_at_most_5": cost["rpp_apply"]["single_user_ms_median"] <= 5,
        "policy_training_at_most_15_min": training["total_seconds"] <= 900,
        "soft_test_all_point_at_least_served": bool(
            methods["soft"]["NDCG@10"].mean() >= methods[plain]["NDCG@10"].mean()
        ),
        "soft+fit_cold_stream_at_least_5pct_ci_above_zero": bool(
            compare(results["soft+fit"], results[plain]).ci95[0] > 0
            and results["soft+fit"].metrics()["NDCG@10"]
            >= 1.05 * results[plain].metrics()["NDCG@10"]
        ),
        "soft_fit_at_least_2000_users_per_min": cost["soft_fit_users_per_minute"] >= 2000,
    }
    report = {
        "model": str(args.model),
        "model_fingerprint": lm.fingerprint(),
        "prompts": str(args.prompts),
        "fixed": fixed,
        "rpp": {"config": asdict(config), "training": training},
        "soft": soft,
        "stream_checkpoints": asdict(checkpoints),
        "test": test_rows,
        "cold_stream": stream_rows,
        "cost": cost,
        "targets": targets,
    }
    print_report(test_rows, stream_rows, cost, targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


def print_report(test_rows: list[dict], stream_rows: list[dict], cost: dict, targets: dict):
    head = f"{'method':<12}{'users':<6}" + "".join(f"{m:>9}" for m in METRICS)
    print("\ntest leave-one-out (full ranking)\n" + head + "  diff NDCG@10 [95% CI]")
    for r in test_rows:
        diff = (
            f"  {r['diff_NDCG@10']:+.4f} [{r['ci95_diff_NDCG@10'][0]:+.4f}, "
            f"{r['ci95_diff_NDCG@10'][1]:+.4f}]"
            if "diff_NDCG@10" in r
            else ""
        )
        print(
            f"{r['method']:<12}{r['users']:<6}" + "".join(f"{r[m]:>9.4f}" for m in METRICS) + diff
        )
    print("\n" + stream_table(stream_rows))
    for r in stream_rows:
        if "vs" in r:
            ci = r["vs"]["ci95_diff_NDCG@10"]
            print(
                f"{r['method']} - {r['vs']['reference']} cold stream NDCG@10: "
                f"{r['vs']['diff_NDCG@10']:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]"
            )
    print(json.dumps({"cost": cost, "targets": targets}, indent=1))


if __name__ == "__main__":
    main()

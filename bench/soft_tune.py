"""Choose the soft-prompt settings on validation (test is never read): composers tuned with k
prompt vectors, then per-user fits of several step sizes and penalties, each scored by all
users' validation NDCG@10 (each user fitted on their training items, composed from their
training history). What wins is what `SoftConfig`'s defaults should hold.

    python -m bench.soft_tune --out bench/results/soft_tune.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.strategies_soft import soft_scores
from promptrec.cli.options import DEFAULT_DATA, DEFAULT_MODEL
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.evaluation import rlm_scores, user_fields
from promptrec.models.metrics import metric, paired_bootstrap_ci, target_ranks
from promptrec.models.model_context import load_context
from promptrec.models.prompts.selection import training_examples
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.fitting import fit_users
from promptrec.models.prompts.soft.pipeline import tune_on_splits

COMPOSERS = ({"n_vectors": 4}, {"n_vectors": 8})
FITS = (
    {"fit_lr": 0.05, "fit_l2": 1.0},
    {"fit_lr": 0.2, "fit_l2": 1.0},
    {"fit_lr": 0.2, "fit_l2": 0.1},
    {"fit_lr": 0.5, "fit_l2": 0.1, "fit_steps": 20, "fit_checks": 4},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench/results/soft_tune.json"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = InteractionData.load(args.data)
    splits = make_splits(data)
    lm, catalog, profiles = load_context(args.model, data, splits)
    users = list(range(len(splits.users)))
    fields = user_fields(splits, catalog, profiles, users, "valid")
    targets = np.array([splits.valid[u] for u in users])
    histories = [f.history for f in fields]
    cold = splits.user_indices("cold")

    def ndcg(scores: np.ndarray) -> np.ndarray:
        return metric("NDCG@10", target_ranks(scores, targets, histories))

    rows, plain = [], None
    for composer_setting in COMPOSERS:
        config = replace(SoftConfig(), **composer_setting)
        composer, log = tune_on_splits(lm, splits, catalog, profiles, config)
        if plain is None:
            with torch.inference_mode():
                plain = ndcg(rlm_scores(lm, fields, config.template))
        composed = ndcg(soft_scores(lm, composer, config, fields))
        rows.append(
            {**composer_setting, "fit": None, "best_epoch": log.best_epoch}
            | {"tuning_seconds": round(log.seconds, 1)}
            | _scores(composed, plain, cold)
        )
        print(json.dumps(rows[-1]), flush=True)
        fits = FITS if composer_setting == COMPOSERS[0] else (FITS[2],)
        for fit_setting in fits:
            fit_config = replace(config, **fit_setting)
            examples = training_examples(splits, users, profiles, catalog, fit_config)
            started = time.perf_counter()
            outcomes = fit_users(lm, composer, examples, fields, fit_config)
            seconds = time.perf_counter() - started
            vectors = [o.vectors for o in outcomes]
            fitted = ndcg(soft_scores(lm, composer, fit_config, fields, vectors))
            rows.append(
                {**composer_setting, "fit": fit_setting, "kept": sum(o.kept for o in outcomes)}
                | {"fit_users_per_minute": round(len(users) / seconds * 60)}
                | _scores(fitted, plain, cold)
            )
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "model": str(args.model),
        "model_fingerprint": lm.fingerprint(),
        "split": "valid",
        "machine": platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "plain_valid_NDCG@10": round(float(plain.mean()), 5) if plain is not None else None,
        "settings_tried": len(rows),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


def _scores(values: np.ndarray, plain: np.ndarray | None, cold: np.ndarray) -> dict:
    out = {
        "valid_NDCG@10": round(float(values.mean()), 5),
        "valid_cold_NDCG@10": round(float(values[cold].mean()), 5),
    }
    if plain is not None:
        low, high = paired_bootstrap_ci(values, plain)
        out["diff_vs_plain"] = round(float((values - plain).mean()), 5)
        out["ci95_diff_vs_plain"] = [round(low, 5), round(high, 5)]
    return out


if __name__ == "__main__":
    main()

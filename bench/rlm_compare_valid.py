"""Compare trained RLMs on validation only (test is never read): NDCG@10 per user group, word
sensitivity, paired-bootstrap CIs against the first model. For choosing between training recipes.

    python -m bench.rlm_compare_valid artifacts/rlm-small /tmp/rlm-teacher \
        --out bench/results/rlm_compare_valid.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from promptrec.cli.options import DEFAULT_DATA
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.evaluation import full_ranking_metrics, rlm_scores, user_fields
from promptrec.models.metrics import paired_bootstrap_ci
from promptrec.models.model_context import load_context
from promptrec.models.sensitivity import sensitivity

GROUPS = ("warm", "cold", "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", type=Path, nargs="+", help="model directories; the first is the reference"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--template", default="seq-1")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    data = InteractionData.load(args.data)
    splits = make_splits(data)
    users = np.arange(len(splits.users))
    ndcg, rows = {}, []
    for path in args.models:
        lm, catalog, profiles = load_context(path, data, splits)
        fields = user_fields(splits, catalog, profiles, users, "valid")
        metrics = full_ranking_metrics(
            rlm_scores(lm, fields, args.template), splits, users, "valid"
        )
        ndcg[path] = metrics["NDCG@10"]
        row = {"model": str(path), "train": lm.meta.get("train")}
        reference = ndcg[args.models[0]]
        for group in GROUPS:
            idx = splits.user_indices(group)
            row[f"NDCG@10_{group}"] = round(float(metrics["NDCG@10"][idx].mean()), 5)
            row[f"HR@10_{group}"] = round(float(metrics["HR@10"][idx].mean()), 5)
            if path != args.models[0]:
                diff = metrics["NDCG@10"][idx] - reference[idx]
                row[f"diff_NDCG@10_{group}"] = round(float(diff.mean()), 5)
                row[f"ci95_diff_NDCG@10_{group}"] = [
                    round(x, 5)
                    for x in paired_bootstrap_ci(metrics["NDCG@10"][idx], reference[idx])
                ]
        row["sensitivity"] = sensitivity(lm, splits, catalog, profiles, args.template, "valid")
        rows.append(row)
        print(
            f"{path}: NDCG@10 "
            + " ".join(f"{g} {row[f'NDCG@10_{g}']:.4f}" for g in GROUPS)
            + f"; words true {row['sensitivity']['true_words_NDCG@10']:.4f} vs shuffled "
            f"{row['sensitivity']['shuffled_words_NDCG@10']:.4f} {row['sensitivity']['ci95_diff']}",
            flush=True,
        )
    report = {
        "split": "valid",
        "template": args.template,
        "reference": str(args.models[0]),
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

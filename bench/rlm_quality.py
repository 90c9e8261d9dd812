"""Benchmark: the RLM's quality against popularity, Markov and SASRec; word sensitivity; speed.

    python -m bench.rlm_quality --model artifacts/rlm-small --data data/ml-100k \
        --seed-models /tmp/rlm-seed1 /tmp/rlm-seed2 --out bench/results/rlm_quality.json

Prints the tables and writes the JSON report: leave-one-out rows per method x users x split x
protocol, the cold stream (every method on every cold-user prediction, by history length, the
RLM minus each baseline with user-level CIs), word sensitivity, ranking speed, and with
--seed-models the spread of the same recipe over training seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from promptrec.cli.options import DEFAULT_DATA, DEFAULT_MODEL
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.model_context import load_context
from promptrec.models.ranking_speed import ranking_speed
from promptrec.models.report import QualityOptions, quality_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench/results/rlm_quality.json"))
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="re-measure only the ranking speed into an existing --out (e.g. on an idle machine)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="users per batched call for the speed measurement (default: per device, "
        "models.ranking.rows_per_call)",
    )
    parser.add_argument(
        "--seed-models",
        type=Path,
        nargs="*",
        default=[],
        help="the same recipe trained with other seeds (promptrec train --seed N)",
    )
    args = parser.parse_args()
    data = InteractionData.load(args.data)
    if args.speed_only:
        splits = make_splits(data)
        report = json.loads(args.out.read_text())
        lm, catalog, profiles = load_context(args.model, data, splits)
        report["ranking"] = ranking_speed(
            lm, splits, catalog, profiles, report["best_template"], args.batch_size
        )
        print(json.dumps(report["ranking"], indent=1))
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        return
    options = QualityOptions(seed_models=tuple(args.seed_models))
    report = quality_report(args.model, data, make_splits(data), options)
    report.extra["machine"] = {
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    print(report.table())
    report.write(args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

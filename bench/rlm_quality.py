"""Benchmark: the RLM's quality against popularity, Markov and SASRec; word sensitivity; speed.

    python bench/rlm_quality.py --model artifacts/rlm-small --data data/ml-100k \
        --out bench/results/rlm_quality.json

Prints the tables and writes the JSON report (rows per method x users x split x protocol).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from models.data.dataset import InteractionData
from models.data.splits import make_splits
from models.report import QualityOptions, quality_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/rlm-small"))
    parser.add_argument("--data", type=Path, default=Path("data/ml-100k"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/rlm_quality.json"))
    args = parser.parse_args()
    data = InteractionData.load(args.data)
    report = quality_report(args.model, data, make_splits(data), QualityOptions())
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

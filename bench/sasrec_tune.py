"""Tune the SASRec baseline on validation (test is never read): a grid of width, dropout and
window length, each trained on the warm users' training sequences with the smoothed epoch
selection, scored by its best smoothed warm-validation NDCG@10. The best setting is what
`models.baselines.sasrec.TUNED` should hold.

    python -m bench.sasrec_tune --out bench/results/sasrec_tune.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

from promptrec.cli.options import DEFAULT_DATA
from promptrec.models.baselines.sasrec import SASRecConfig, SASRecScorer
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits

GRID = {"hidden": (64, 128), "dropout": (0.2, 0.5), "max_len": (50, 200)}


def settings() -> list[SASRecConfig]:
    names = list(GRID)
    return [
        replace(SASRecConfig(), **dict(zip(names, values, strict=True)))
        for values in itertools.product(*GRID.values())
    ]


def fit_one(data_dir: Path, config: SASRecConfig) -> dict:
    splits = make_splits(InteractionData.load(data_dir))
    warm = splits.user_indices("warm")
    train = [splits.train[u] for u in warm]
    valid = (train, [splits.valid[u] for u in warm])
    scorer = SASRecScorer(config, progress=False).fit(train, splits.n_items, valid=valid)
    best = max(scorer.history, key=lambda h: h["smoothed"])
    return {
        "config": {name: getattr(config, name) for name in GRID},
        "valid_warm_NDCG@10_smoothed": round(best["smoothed"], 5),
        "valid_warm_NDCG@10_at_best": round(best["ndcg@10"], 5),
        "best_epoch": scorer.best_epoch,
        "epochs_run": scorer.history[-1]["epoch"],
        "train_seconds": round(scorer.train_seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--processes", type=int, default=2, help="settings trained at once")
    parser.add_argument("--out", type=Path, default=Path("bench/results/sasrec_tune.json"))
    args = parser.parse_args()
    grid = settings()
    with ProcessPoolExecutor(args.processes) as pool:
        rows = list(pool.map(fit_one, [args.data] * len(grid), grid))
    rows.sort(key=lambda r: -r["valid_warm_NDCG@10_smoothed"])
    print(f"{'hidden':>7}{'dropout':>8}{'max_len':>8}{'valid NDCG@10':>15}{'epoch':>7}{'s':>7}")
    for r in rows:
        c = r["config"]
        print(
            f"{c['hidden']:>7}{c['dropout']:>8}{c['max_len']:>8}"
            f"{r['valid_warm_NDCG@10_smoothed']:>15.4f}{r['best_epoch']:>7}{r['train_seconds']:>7}"
        )
    result = {
        "selection": "best smoothed warm-user validation NDCG@10; test never read",
        "settings_tried": len(rows),
        "defaults": asdict(SASRecConfig()),
        "best": rows[0]["config"],
        "rows": rows,
        "machine": {"platform": platform.platform(), "processes": args.processes},
        "command": "python -m bench.sasrec_tune --out bench/results/sasrec_tune.json",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"best: {rows[0]['config']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

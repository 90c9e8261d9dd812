"""Benchmark: model passes on CPU with glibc's default malloc vs freed memory retained.

    python -m bench.allocator --model artifacts/rlm-small --data data/ml-100k \
        --out bench/results/allocator.json

Each configuration (malloc default or `models.malloc_settings.retain_freed_memory`, x prompts per
model call) runs in its own process, since malloc settings are process-wide: the seq-1 prompts
of every user, scored (traced ranking graph) and differentiated (eager gradient w.r.t. the input
embeddings, as a PAP-REC round takes it). The configurations take turns, round after round, so
drift in machine speed hits all of them; the table shows medians over rounds per 1,000 prompts:
wall seconds, system (kernel) seconds and minor page faults.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from promptrec.cli.options import DEFAULT_DATA, DEFAULT_MODEL

CONFIGS = [("default", 512), ("default", 64), *(("retained", n) for n in (512, 256, 128, 64))]


def child(model: Path, data_dir: Path, malloc: str, rows: int, passes: int) -> dict:
    import promptrec.models.rlm.model as rlm_model
    from promptrec.models.data.dataset import InteractionData
    from promptrec.models.data.splits import make_splits
    from promptrec.models.evaluation import user_fields
    from promptrec.models.model_context import load_context
    from promptrec.models.ranking import encode_token_lists, item_logits, item_scorer
    from promptrec.models.templates import TEMPLATES, render_tokens

    if malloc == "default":  # the model would apply the settings when it is built
        rlm_model.retain_freed_memory = lambda: False
    data = InteractionData.load(data_dir)
    splits = make_splits(data)
    lm, catalog, profiles = load_context(model, data, splits)
    users = np.arange(len(splits.users))
    fields = user_fields(splits, catalog, profiles, users, "test")
    tokens = [render_tokens(TEMPLATES["seq-1"], f, lm.max_history) for f in fields]
    chunks = [encode_token_lists(lm, tokens[lo : lo + rows]) for lo in range(0, len(tokens), rows)]
    scorer = item_scorer(lm)
    embedding = lm.model.get_input_embeddings()

    def score() -> None:
        with torch.inference_mode():
            for ids, mask in chunks:
                scorer(ids, mask)

    def gradient() -> None:
        for ids, mask in chunks:
            embeds = embedding(ids).detach().requires_grad_(True)
            logits = item_logits(lm.model, ids, mask, lm.item_token_ids(), embeds)
            torch.log_softmax(logits, 1)[:, 0].sum().backward()

    out = {}
    for name, run in (("score", score), ("gradient", gradient)):
        run()  # warm-up: the first pass grows the heap
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(passes):
            run()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
        per_k = 1000 / (passes * len(tokens))
        out[name] = {
            "wall_s": wall * per_k,
            "sys_s": (after.ru_stime - before.ru_stime) * per_k,
            "minor_faults": (after.ru_minflt - before.ru_minflt) * per_k,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench/results/allocator.json"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passes", type=int, default=2, help="passes over all users per round")
    parser.add_argument("--child", nargs=2, metavar=("MALLOC", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        malloc, rows = args.child
        print(json.dumps(child(args.model, args.data, malloc, int(rows), args.passes)))
        return

    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in CONFIGS}
    for r in range(args.rounds):
        for malloc, rows in CONFIGS:
            cmd = [sys.executable, "-m", "bench.allocator", "--model", str(args.model)]
            cmd += ["--data", str(args.data)]
            cmd += ["--passes", str(args.passes), "--child", malloc, str(rows)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[(malloc, rows)].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {malloc} malloc, {rows} prompts per call done", flush=True)

    rows_out = []
    for (malloc, rows), results in runs.items():
        row = {"malloc": malloc, "prompts_per_call": rows}
        for step in ("score", "gradient"):
            for key in ("wall_s", "sys_s", "minor_faults"):
                row[f"{step}_{key}_per_1000"] = round(
                    float(np.median([x[step][key] for x in results])), 4
                )
        rows_out.append(row)
    base = rows_out[0]
    for row in rows_out:
        for step in ("score", "gradient"):
            row[f"{step}_speedup_vs_default_512"] = round(
                base[f"{step}_wall_s_per_1000"] / row[f"{step}_wall_s_per_1000"], 2
            )
    header = f"{'malloc':<10}{'per call':>9}" + "".join(
        f"{h:>12}" for h in ("score s", "sys s", "faults", "x", "grad s", "sys s", "faults", "x")
    )
    print(f"per 1,000 prompts, median of {args.rounds} rounds\n{header}")
    for row in rows_out:
        cells = [
            row[f"{step}_{key}"]
            for step in ("score", "gradient")
            for key in ("wall_s_per_1000", "sys_s_per_1000", "minor_faults_per_1000")
        ]
        print(
            f"{row['malloc']:<10}{row['prompts_per_call']:>9}"
            + "".join(f"{c:>12.3f}" for c in cells[:2])
            + f"{cells[2]:>12.0f}{row['score_speedup_vs_default_512']:>12.2f}"
            + "".join(f"{c:>12.3f}" for c in cells[3:5])
            + f"{cells[5]:>12.0f}{row['gradient_speedup_vs_default_512']:>12.2f}"
        )
    report = {
        "rows": rows_out,
        "rounds": args.rounds,
        "passes_per_round": args.passes,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

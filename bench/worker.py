"""Benchmark: prompt-search workers end to end through the real stack.

    python -m bench.worker [--users N] [--workers 1] [--batch-size 64] \
        [--out bench/results/worker.json]

What it does, all on this machine and in one run:

1. a fresh Postgres database on 127.0.0.1:5432 (dropped afterwards) with MovieLens-100k and the
   shipped prompt set loaded (`promptrec db upgrade / load-dataset / load-prompts`), a Redis key
   prefix of its own on 127.0.0.1:6379 (deleted afterwards);
2. `promptrec serve` (uvicorn) and `--workers` `promptrec worker` processes on that stack;
3. the held-out cold users of ML-100k (never seen in RLM training) replayed as clients, as
   `promptrec demo` does: recommendations *before* (task-level prompt, their history in the
   request), their history posted as events (API -> Postgres), the worker's new-user trigger
   (scheduler -> Redis stream -> batched search -> Postgres), recommendations *after* (with the
   personal prompt the search wrote, or the task-level one when it kept none);
4. `users_per_min`: users whose prompt was written, over the time from the first event posted
   to the last prompt written (the server's `searched_at`, so the clients' polling period does
   not enter the figure); test HR@10/NDCG@10 before and after with a paired
   bootstrap CI of the NDCG@10 difference.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from promptrec.cli.demo import cold_users, replay, summary, table
from promptrec.models.metrics import paired_bootstrap_ci
from tests.support.databases import REDIS_URL, delete_redis_keys, temporary_postgres_database
from tests.support.gateway_process import GatewayProcess
from tests.support.paths import MOVIELENS, REPO, SHIPPED_PROMPTS, SMALL_MODEL, shown
from tests.support.processes import run_promptrec
from tests.support.settings import promptrec_env
from tests.support.worker_process import WorkerProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SMALL_MODEL)
    parser.add_argument("--data", type=Path, default=MOVIELENS)
    parser.add_argument("--prompts", type=Path, default=SHIPPED_PROMPTS)
    parser.add_argument("--users", type=int, help="cold users to replay (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--batch-size", type=int, default=64, help="PROMPTREC_WORKER_BATCH_SIZE")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="clients replaying at once (all, by default)"
    )
    parser.add_argument(
        "--poll", type=float, default=2.0, help="seconds between a client's prompt polls"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait per search")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "worker.json")
    args = parser.parse_args()

    prefix = f"promptrec-bench-{uuid.uuid4().hex[:8]}:"
    logs = Path(tempfile.mkdtemp(prefix="promptrec-worker-bench-"))
    print(f"process logs in {logs}")
    users = cold_users(args.data, args.users)
    started: list[WorkerProcess] = []
    with temporary_postgres_database(prefix="promptrec_bench") as database_url:
        env = promptrec_env(
            database_url=database_url,
            redis_url=REDIS_URL,
            redis_key_prefix=prefix,
            model_path=args.model,
            worker_batch_size=args.batch_size,
            worker_scheduler_interval_s=1,
            embedded_worker="false",  # the searches run in the worker processes
            log_level="INFO",
        )
        run_promptrec(["db", "upgrade"], env)
        print(run_promptrec(["db", "load-dataset", "--data", str(args.data)], env))
        print(run_promptrec(["db", "load-prompts", str(args.prompts)], env))
        try:
            api_log = logs / "worker-bench-api.log"
            with GatewayProcess(
                env, api_log, model=args.model, label="api", ready_timeout_s=180
            ) as server:
                for w in range(args.workers):
                    log = logs / f"worker-bench-{w}.log"
                    started.append(WorkerProcess(env, log, f"bench-{w}"))
                time.sleep(5)  # the workers load the model
                results = asyncio.run(
                    replay(server.url, users, args.timeout, args.concurrency, args.poll)
                )
        finally:
            for process in started:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.terminate(60)
                process.close()
            delete_redis_keys(prefix, REDIS_URL)

    print(table(results))
    s = summary(results)
    ok = [r for r in results if r.error is None]
    after = np.array([r.ndcg_after for r in ok])
    before = np.array([r.ndcg_before for r in ok])
    body = {
        "users_per_min": s.get("users_per_min"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "batch_size": args.batch_size,
        "workers": args.workers,
        "cold_users": {
            "n": s["n"],
            "searched": s["searched"],
            "personalized": s["personalized"],
            "HR@10_before": s["HR@10_before"],
            "HR@10_after": s["HR@10_after"],
            "NDCG@10_before": s["NDCG@10_before"],
            "NDCG@10_after": s["NDCG@10_after"],
            "ci95_NDCG@10_after_minus_before": [
                round(x, 5) for x in paired_bootstrap_ci(after, before)
            ],
        },
        "seconds": s.get("seconds"),
        "errors": s["errors"],
        "examples": [
            {"user": r.user.source_user, "personal_tokens": r.personal_tokens}
            for r in ok
            if r.personalized
        ][:10],
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "command": "python -m bench.worker "
        + " ".join(a if not a.startswith(str(REPO)) else shown(Path(a)) for a in sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(body, indent=1) + "\n")
    print(f"written to {shown(args.out)}")
    return 0 if not s["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())

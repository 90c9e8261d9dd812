"""Load benchmark of the gateway: a real `promptrec serve` (uvicorn) process under HTTP load.

    python -m bench.serve_load [--duration 10] [--out bench/results/serve.json]

What it does, all on 127.0.0.1 and in one run:

1. a fresh embedded SQLite database in a temp dir (`PROMPTREC_DATABASE_URL`), then
   `promptrec db upgrade` and `promptrec db load-dataset --data data/ml-100k`; the in-process
   prompt cache (no Redis); the model `artifacts/rlm-small` on the CPU;
2. `promptrec serve` with the default settings; a closed-loop async load generator
   (aiohttp, one ClientSession with a one-connection keep-alive pool per virtual user) sends
   `POST /v1/users/{id}/recommendations {"task": "sequential", "count": 10}` for random known
   ML-100k users at concurrency 1, 8, 32 and 128, each for `--duration` seconds after a
   `--warmup`; per level: rps, p50/p95/p99 latency, errors (non-2xx or exceptions) by status;
3. the batching gain, side by side: the server restarted with `PROMPTREC_MAX_BATCH_SIZE=1`,
   concurrency 32 again; `batching_gain` = rps(default, c=32) / rps(batch size 1, c=32);
4. overload: the server restarted with `PROMPTREC_QUEUE_LIMIT=8`, concurrency 256 for
   `--overload-duration` seconds; counts of 200 / 429 / 5xx and whether 429s carry `Retry-After`;
5. soft prompts' serving overhead: a copy of the database with the soft set `--soft-set` loaded
   (every user served a soft version, scored from input embeddings) against a copy with the
   PAP-REC set `--prompts` loaded (every user a stored version too) and the plain prompt (none
   stored), alternated over two rounds at concurrency 1 and 32; `soft_overhead` per level =
   1 - rps(soft) / rps(other), each the mean of its two runs (`--soft-set ''` skips it).

Per level it also reads the server's `/metrics` before and after (mean batch size, queue time,
model-call time, server-side request time) and the CPU seconds the server and the load
generator used, so the report can say where the time goes. The server process is always
terminated (its whole process group; SIGKILL if SIGTERM is not enough). The server and this
load generator share the machine's CPU cores: every number is for both on the same cores.
Prints a table and writes JSON (default `bench/results/serve.json`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from bench.serve_load_generator import (
    BODY,
    CLIENT_TIMEOUT_S,
    GAIN_CONCURRENCY,
    OVERLOAD_QUEUE_LIMIT,
    ROUTE,
    measure,
    measure_overload,
)
from bench.serve_load_report import goals, table
from tests.support.gateway_process import GatewayProcess, stop_all_gateways
from tests.support.paths import MOVIELENS, REPO, SMALL_MODEL, shown
from tests.support.processes import run_promptrec
from tests.support.settings import promptrec_env

LEVELS = (1, 8, 32, 128)
SOFT_LEVELS = (1, 32)
READY_TIMEOUT_S = 180.0


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally` / `with`


def _known_users(db_path: Path) -> list[str]:
    """Users the dataset loaded, with at least one interaction (all of ML-100k's)."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT DISTINCT user_id FROM interactions ORDER BY user_id").fetchall()
    return [r[0] for r in rows]


def gateway(env: dict[str, str], model: Path, log: Path, label: str) -> GatewayProcess:
    return GatewayProcess(env, log, model=model, label=label, ready_timeout_s=READY_TIMEOUT_S)


def _sanity_check(server: GatewayProcess, user_id: str) -> dict:
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as client:
        response = client.post(f"/v1/users/{user_id}/recommendations", json=BODY)
    if response.status_code != 200:
        raise RuntimeError(f"sanity request failed: {response.status_code} {response.text}")
    body = response.json()
    if len(body["items"]) != BODY["count"]:
        raise RuntimeError(f"expected {BODY['count']} items, got {len(body['items'])}")
    return {"user_id": user_id, "items": len(body["items"]), "model": body["model"]}


def _db_with(env: dict[str, str], db_path: Path, copy: Path, prompt_file: Path) -> dict[str, str]:
    """A copy of the loaded database with `prompt_file` loaded too, and the env that serves it."""
    shutil.copy(db_path, copy)
    copy_env = {**env, "PROMPTREC_DATABASE_URL": f"sqlite:///{copy}"}
    print(run_promptrec(["db", "load-prompts", str(prompt_file)], copy_env), flush=True)
    return copy_env


def soft_overhead(
    env: dict[str, str], model: Path, tmp: Path, db_path: Path, user_ids: list[str], args
) -> dict:
    """rps and p50 with every user served a soft version, against the same users served the
    PAP-REC prompt set (every user with a stored version, read and cached alike) and the plain
    prompt (no version stored), alternated over two rounds (the machine's noise drifts; the
    means of alternated runs see the same)."""
    soft_set = args.soft_set.resolve()
    soft_env = {
        **_db_with(env, db_path, tmp / "soft.db", soft_set),
        "PROMPTREC_STRATEGY": "soft",
        "PROMPTREC_SOFT_COMPOSER_PATH": str(soft_set.parent / f"{soft_set.stem}-composer"),
    }
    envs = {
        "plain": env,
        "paprec": _db_with(env, db_path, tmp / "paprec.db", args.prompts.resolve()),
        "soft": soft_env,
    }
    runs: dict[str, list[dict]] = {label: [] for label in envs}
    for round_ in range(2):
        for label, run_env in envs.items():
            log = tmp / f"server-{label}-{round_}.log"
            with gateway(run_env, model, log, label) as server:
                runs[label].append(
                    {c: measure(server, user_ids, c, args, label) for c in SOFT_LEVELS}
                )
    levels = []
    for c in SOFT_LEVELS:
        rps = {k: round(sum(r[c]["rps"] for r in v) / len(v), 1) for k, v in runs.items()}
        p50 = {k: [r[c]["p50_ms"] for r in v] for k, v in runs.items()}
        overhead = {
            f"vs_{k}": round(1 - rps["soft"] / rps[k], 3) if rps[k] else None
            for k in ("paprec", "plain")
        }
        levels.append({"concurrency": c, "rps": rps, "p50_ms": p50, "soft_overhead": overhead})
    return {
        "soft_set": shown(soft_set),
        "prompt_set": shown(args.prompts.resolve()),
        "rounds": 2,
        "levels": levels,
        "overhead_vs_paprec_le_10pct": all(
            (lv["soft_overhead"]["vs_paprec"] or 1) <= 0.10 for lv in levels
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each level")
    parser.add_argument("--overload-duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/serve.json")
    parser.add_argument("--model", type=Path, default=SMALL_MODEL)
    parser.add_argument("--data", type=Path, default=MOVIELENS)
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="cap on requests per level"
    )
    parser.add_argument("--log-level", default="INFO", help="PROMPTREC_LOG_LEVEL of the server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (db, logs)")
    parser.add_argument(
        "--prompts",
        type=Path,
        default=REPO / "artifacts/prompts/sequential.json",
        help="the PAP-REC prompt set the soft overhead run compares with",
    )
    parser.add_argument(
        "--soft-set",
        type=Path,
        default=REPO / "artifacts/prompts/soft.json",
        help="soft set file (its composer in NAME-composer/ next to it) for the overhead run",
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.overload_duration <= 0:
        parser.error("durations must be positive")

    from promptrec.core.settings import Settings  # the defaults the server runs with

    defaults = {
        name: Settings.model_fields[name].default
        for name in ("max_batch_size", "max_wait_ms", "queue_limit", "request_timeout_ms")
    }
    defaults["retry_after_s"] = Settings.model_fields["retry_after_s"].default
    model = args.model.resolve()
    data = args.data.resolve()

    atexit.register(stop_all_gateways)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="promptrec-serve-bench-"))
    db_path = tmp / "bench.db"
    env = promptrec_env(
        database_url=f"sqlite:///{db_path}",  # absolute: sqlite:////tmp/...
        model_path=model,
        data_dir=data,
        device="cpu",
        log_level=args.log_level,
        migrate_on_start="true",
        # Serving alone: no prompt set is loaded, so an embedded worker would search every
        # user in the background (bench/worker.py measures the workers).
        embedded_worker="false",
    )
    started = time.monotonic()
    loadavg_at_start = os.getloadavg()  # other work on the same cores skews every number
    try:
        print(f"temp dir {tmp}; {env['PROMPTREC_DATABASE_URL']}", flush=True)
        print(run_promptrec(["db", "upgrade"], env), flush=True)
        print(run_promptrec(["db", "load-dataset", "--data", str(data)], env), flush=True)
        user_ids = _known_users(db_path)
        print(f"{len(user_ids)} known users", flush=True)

        rows: list[dict] = []
        with gateway(env, model, tmp / "server-default.log", "default") as server:
            sanity = _sanity_check(server, user_ids[0])
            for concurrency in LEVELS:
                rows.append(measure(server, user_ids, concurrency, args, "default"))

        env_b1 = {**env, "PROMPTREC_MAX_BATCH_SIZE": "1"}
        with gateway(env_b1, model, tmp / "server-batch1.log", "batch-1") as server:
            batch1 = measure(server, user_ids, GAIN_CONCURRENCY, args, "batch-1")

        env_ol = {**env, "PROMPTREC_QUEUE_LIMIT": str(OVERLOAD_QUEUE_LIMIT)}
        with gateway(env_ol, model, tmp / "server-overload.log", "overload") as server:
            overload = measure_overload(server, user_ids, args)
        soft = (
            soft_overhead(env, model, tmp, db_path, user_ids, args) if args.soft_set.name else None
        )
    finally:
        stop_all_gateways()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    default_32 = next(r for r in rows if r["concurrency"] == GAIN_CONCURRENCY)
    gain = round(default_32["rps"] / batch1["rps"], 2) if batch1["rps"] else None
    import torch  # only to report the intra-op threads a process gets here by default

    command = "python -m bench.serve_load " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = {
        "rows": [
            {k: r[k] for k in ("concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors")}
            for r in rows
        ],
        "batching_gain": gain,
        "batch_size_1": batch1,
        "overload": overload,
        "soft": soft,
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15_min": {
            "at_start": [round(x, 2) for x in loadavg_at_start],
            "at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "shared_cores_note": (
            f"the server (uvicorn, one process; torch with {torch.get_num_threads()} intra-op "
            f"threads) and the load generator (aiohttp, one process) ran on the same "
            f"{os.cpu_count()} CPU cores; client CPU seconds per level are in rows_detail"
        ),
        "settings": {
            "database": "embedded SQLite (fresh file in a temp dir), ML-100k loaded",
            "cache": "in-process",
            "model_path": shown(model),
            "device": "cpu",
            "log_level": args.log_level,
            "defaults": defaults,
            "batch_size_1_run": {"max_batch_size": 1},
            "overload_run": {"queue_limit": OVERLOAD_QUEUE_LIMIT},
            "request": {"route": ROUTE, "body": BODY, "users": "random known ML-100k user"},
            "load": {
                "generator": f"aiohttp {aiohttp.__version__}, closed loop, one ClientSession "
                "(keep-alive pool of one connection) per virtual user",
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "overload_duration_s": args.overload_duration,
                "client_timeout_s": CLIENT_TIMEOUT_S,
                "max_requests_per_level": args.max_requests,
                "seed": args.seed,
                "window": "outcomes completed inside the measured window count; rps counts "
                "2xx answers only; latency percentiles are over 2xx answers",
            },
            "server_command": "promptrec serve --host 127.0.0.1 --port <free> --model "
            + shown(model),
            "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "rows_detail": rows,
        "sanity_check": sanity,
        "goals": goals(rows, gain, overload),
        "wall_s": round(time.monotonic() - started, 1),
        "command": command.strip(),
    }
    print()
    print(table(rows, batch1, gain, overload))
    for level in soft["levels"] if soft else []:
        rps, overhead = level["rps"], level["soft_overhead"]
        print(
            f"soft prompts c={level['concurrency']}: {rps['soft']:.1f} rps against "
            f"{rps['paprec']:.1f} with the PAP-REC set ({overhead['vs_paprec']:+.1%}) "
            f"and {rps['plain']:.1f} plain ({overhead['vs_plain']:+.1%})"
        )
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

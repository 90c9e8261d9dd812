"""Benchmark: the production topology under faults, as real processes.

    python -m bench.faults [--users 8] [--out bench/results/faults.json]

A private Postgres (`initdb` into a temp dir, `pg_ctl`) and a private Redis (`redis-server` on a
free port), both started here; MovieLens-100k and the shipped prompt set loaded as `make run`
loads them; one `promptrec serve` with the embedded worker off and two `promptrec worker`
processes (the process managers of tests/support). A steady client load runs all along:
events and recommendations on keep-alive connections. Each fault is injected in turn while an
admin job searches `--users` users:

- worker SIGKILL mid-batch (a replacement worker is started),
- Redis SIGKILL and an empty restart (no persistence: stream, group and cache are gone),
- Postgres stopped for 10 s,
- API SIGKILL (a new API process is started),
- Redis writes paused (CLIENT PAUSE WRITE) right after a worker took the job.

Per fault: acknowledged events lost (must be 0), job users not finished 3 min after the fault
(0), duplicate versions (0), responses by status (no 500; no connection dropped without a
response while the API process was alive), and how long a stale prompt was served after its new
version committed (seconds; the API re-reads a cached prompt every PROMPTREC_PROMPT_REFRESH_S).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bench.faults_injection import FAULTS
from bench.faults_stack import ADMIN_KEY, Load, Stack, queue_admin_job
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import Interaction, UserPrompt
from tests.support.databases import prepared_database
from tests.support.paths import MOVIELENS, REPO, SHIPPED_PROMPTS, SMALL_MODEL
from tests.support.private_servers import PostgresServer, RedisServer
from tests.support.processes import wait_for
from tests.support.search_jobs import JobView
from tests.support.settings import worker_env

STUCK_AFTER_S = 180


# ---- measurements -------------------------------------------------------------------------


def committed_versions(engine, users: list[str], job_id: str) -> dict[str, tuple[int, float]]:
    with Session(engine) as session:
        rows = session.execute(
            select(UserPrompt.user_id, UserPrompt.version, UserPrompt.created_at).where(
                UserPrompt.job_id == job_id, UserPrompt.user_id.in_(users)
            )
        ).all()
    return {u: (v, at.timestamp()) for u, v, at in rows}


def stale_seconds(served: list[tuple[float, str, int]], committed: dict) -> float:
    """Longest time from a version's commit to the first answer that serves it (or a later
    one); 0 when every answer after a commit served it. Answers before the commit are not
    stale."""
    worst = 0.0
    for user, (version, at) in committed.items():
        after = sorted((t, v) for t, u, v in served if u == user and t >= at)
        stale_until = next((t for t, v in after if v >= version), None)
        if stale_until is None:
            if after:  # never served the new version while we were watching
                worst = max(worst, after[-1][0] - at)
            continue
        worst = max(worst, stale_until - at)
    return round(worst, 2)


def duplicate_versions(engine) -> int:
    with Session(engine) as session:
        return session.scalar(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM user_prompts WHERE job_id IS NOT NULL "
                "GROUP BY user_id, task, job_id HAVING count(*) > 1) d"
            )
        )


def lost_events(engine, accepted: list[str]) -> int:
    if not accepted:
        return 0
    with Session(engine) as session:
        found = session.scalar(
            select(func.count()).select_from(Interaction).where(Interaction.event_id.in_(accepted))
        )
    return len(set(accepted)) - found


def run_fault(name: str, inject, stack: Stack, load: Load, engine, users: list[str]) -> dict:
    print(f"-- {name}", flush=True)
    load.users = users  # recommendations for the job's users: who could be served stale
    load.swap()
    job_id = queue_admin_job(stack, users)
    view = JobView(stack.env["PROMPTREC_DATABASE_URL"], job_id)
    inject(stack, view)
    injected = time.monotonic()
    with contextlib.suppress(AssertionError):  # a stuck job is a figure, not a crash
        wait_for(view.finished, STUCK_AFTER_S, "the job to finish", every=1)
    statuses = view.statuses()
    time.sleep(8)  # let the clients see the new versions (and any stale one)
    tally = load.swap()
    committed = committed_versions(engine, users, job_id)
    view.close()
    return {
        "fault": name,
        "job_seconds": round(time.monotonic() - injected, 1),
        "job_users_stuck": sum(n for s, n in statuses.items() if s not in ("done", "failed")),
        "job_statuses": statuses,
        "acknowledged_events": len(tally.accepted_events),
        "acknowledged_events_lost": lost_events(engine, tally.accepted_events),
        "duplicate_versions": duplicate_versions(engine),
        "responses_by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
        "responses_500": tally.statuses.get(500, 0),
        "dropped_without_response_while_api_alive": tally.dropped_while_alive,
        "connection_errors_while_api_dead": tally.refused_while_down,
        "stale_prompt_seconds_max": stale_seconds(tally.served, committed),
    }


def table(rows: list[dict]) -> str:
    header = (
        f"{'fault':<40} {'lost':>4} {'stuck':>5} {'dup':>3} {'500':>4} {'drop':>4} "
        f"{'stale s':>7}  statuses"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['fault']:<40} {r['acknowledged_events_lost']:>4} {r['job_users_stuck']:>5} "
            f"{r['duplicate_versions']:>3} {r['responses_500']:>4} "
            f"{r['dropped_without_response_while_api_alive']:>4} "
            f"{r['stale_prompt_seconds_max']:>7}  {r['responses_by_status']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="users per admin job")
    parser.add_argument("--data", type=Path, default=MOVIELENS)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "faults.json")
    parser.add_argument("--faults", help="comma-separated subset of: " + ", ".join(FAULTS))
    args = parser.parse_args(argv)
    chosen = [f.strip() for f in args.faults.split(",")] if args.faults else list(FAULTS)

    directory = Path(tempfile.mkdtemp(prefix="promptrec-faults-"))
    postgres, redis_server = PostgresServer(), RedisServer(directory)
    postgres.start()
    redis_server.start()
    url = prepared_database(postgres.url, args.data)
    engine = make_sync_engine(url)
    load_prompt_set(engine, SHIPPED_PROMPTS)
    env = worker_env(
        url,
        redis_server.url,
        SMALL_MODEL,
        admin_api_key=ADMIN_KEY,
        embedded_worker=False,
        migrate_on_start=False,
        worker_claim_idle_s=10,
        worker_max_backoff_s=2,
    )
    stack = Stack(env, directory, postgres, redis_server)
    rows: list[dict] = []
    load = None
    try:
        stack.start_gateway()
        for _ in range(2):
            stack.start_worker()
        load = Load(stack, [str(u) for u in range(1, 41)])
        load.start()
        for n, name in enumerate(chosen):
            # Fresh users per fault, so that every job writes new versions.
            users = [str(100 + n * args.users + k) for k in range(args.users)]
            rows.append(run_fault(name, FAULTS[name], stack, load, engine, users))
    finally:
        if load is not None:
            load.close()
        if stack.gateway is not None:
            stack.gateway.stop()
        for worker in stack.workers:
            worker.close()
        engine.dispose()
        redis_server.stop()
        postgres.remove()
        shutil.rmtree(directory, ignore_errors=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "command": "python -m bench.faults " + " ".join(argv or sys.argv[1:]),
        "users_per_job": args.users,
        "goals": {
            "acknowledged_events_lost": 0,
            "job_users_stuck": 0,
            "duplicate_versions": 0,
            "responses_500": 0,
            "dropped_without_response_while_api_alive": 0,
            "stale_prompt_seconds_max": "<= 10",
        },
        "faults": rows,
    }
    args.out.write_text(json.dumps(body, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

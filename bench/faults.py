"""Benchmark: the production topology under faults, as real processes.

    python bench/faults.py [--users 8] [--out bench/results/faults.json]

A private Postgres (`initdb` into a temp dir, `pg_ctl`) and a private Redis (`redis-server` on a
free port), both started here; MovieLens-100k and the shipped prompt set loaded as `make run`
loads them; one `promptrec serve` with the embedded worker off and two `promptrec worker`
processes (the helpers of tests/service/worker_testing.py). A steady client load runs all along:
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
import http.client
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "service")]

import redis  # noqa: E402
from gateway_testing import prepared_database  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from worker_testing import (  # noqa: E402
    GatewayProcess,
    JobView,
    PostgresServer,
    RedisServer,
    WorkerProcess,
    wait_for,
    worker_env,
)

from promptrec.core.db.engine import make_sync_engine  # noqa: E402
from promptrec.core.db.prompt_loader import load_prompt_set  # noqa: E402
from promptrec.core.db.tables import Interaction, UserPrompt  # noqa: E402
from promptrec.core.queue import GROUP  # noqa: E402

MODEL = ROOT / "artifacts" / "rlm-small"
PROMPTS = ROOT / "artifacts" / "prompts" / "sequential.json"
ADMIN_KEY = "bench-admin-key"
ITEMS = ["50", "100", "181", "258", "286", "1", "7", "98"]
STUCK_AFTER_S = 180


@dataclass
class Stack:
    """The processes, and where the clients find the API now."""

    env: dict[str, str]
    directory: Path
    postgres: PostgresServer
    redis_server: RedisServer
    gateway: GatewayProcess | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    started: int = 0
    api_killed: bool = False  # between the SIGKILL of the API and its replacement

    def start_gateway(self) -> None:
        self.gateway = GatewayProcess(self.env, self.directory / f"api-{time.time():.0f}.log")

    def start_worker(self) -> WorkerProcess:
        self.started += 1
        name = f"worker-{self.started}"
        process = WorkerProcess(self.env, self.directory / f"{name}.log", name)
        self.workers.append(process)
        return process

    def api_alive(self) -> bool:
        return (
            self.gateway is not None and not self.api_killed and self.gateway.process.poll() is None
        )


@dataclass
class Tally:
    """What the clients saw during one fault."""

    statuses: Counter = field(default_factory=Counter)
    dropped_while_alive: int = 0  # no response on a connection, the API process alive
    refused_while_down: int = 0  # the API process was dead: nobody to answer
    accepted_events: list[str] = field(default_factory=list)
    served: list[tuple[float, str, int]] = field(default_factory=list)  # (time, user, version)


class Load:
    """Client threads: events and recommendations, each on its own keep-alive connection."""

    def __init__(self, stack: Stack, users: list[str], threads: int = 2) -> None:
        self.stack, self.users, self.threads = stack, users, threads
        self.tally = Tally()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = 0
        self.pool: list[threading.Thread] = []

    def swap(self) -> Tally:
        with self.lock:
            tally, self.tally = self.tally, Tally()
        return tally

    def _record(self, **what) -> None:
        with self.lock:
            if "status" in what:
                self.tally.statuses[what["status"]] += 1
            if "event" in what:
                self.tally.accepted_events.append(what["event"])
            if "served" in what:
                self.tally.served.append(what["served"])
            if what.get("dropped"):
                if self.stack.api_alive():
                    self.tally.dropped_while_alive += 1
                else:
                    self.tally.refused_while_down += 1

    def _client(self, n: int) -> None:
        connection, port = None, None
        while not self.stop.is_set():
            gateway = self.stack.gateway
            if gateway is None or not self.stack.api_alive():
                time.sleep(0.2)
                continue
            if connection is None or port != gateway.port:
                port = gateway.port
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            with self.lock:
                self.counter += 1
                k = self.counter
            user = self.users[k % len(self.users)]
            try:
                if k % 2:
                    event = f"bench-{n}-{k}"
                    body = {
                        "events": [
                            {
                                "event_id": event,
                                "user_id": f"load-{k % 50}",
                                "item_id": ITEMS[k % len(ITEMS)],
                                "timestamp": 1_000_000_000 + k,
                            }
                        ]
                    }
                    status, answer = _post(connection, "/v1/events", body)
                    self._record(status=status)
                    if status == 200 and answer["results"][0]["status"] == "accepted":
                        self._record(event=event)
                else:
                    status, answer = _post(
                        connection, f"/v1/users/{user}/recommendations", {"count": 5}
                    )
                    self._record(status=status)
                    if status == 200:
                        self._record(served=(time.time(), user, answer["prompt"]["version"]))
            except (OSError, http.client.HTTPException):
                self._record(dropped=True)
                connection.close()
                connection = None
                time.sleep(0.1)
            time.sleep(0.05)

    def start(self) -> None:
        for n in range(self.threads):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self.pool.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.pool:
            thread.join(30)


def _post(connection: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, {}


def queue_admin_job(stack: Stack, users: list[str]) -> str:
    """Through the API as an operator would, retried while the API answers nothing or 503."""
    deadline = time.monotonic() + 120
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=15)
            connection.request(
                "POST",
                "/v1/admin/prompt-search-jobs",
                json.dumps({"task": "sequential", "user_ids": users}),
                {"content-type": "application/json", "X-API-Key": ADMIN_KEY},
            )
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status == 202:
                return body["job_id"]
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("could not queue an admin job")
        time.sleep(1)


# ---- faults -------------------------------------------------------------------------------


def _busy_consumers(stack: Stack) -> set[str]:
    """Consumers holding pending messages (a batch in hand)."""
    client = redis.Redis.from_url(stack.redis_server.url, decode_responses=True)
    try:
        summary = client.xpending(f"{stack.env['PROMPTREC_REDIS_KEY_PREFIX']}search:stream", GROUP)
    finally:
        client.close()
    return {c["name"] for c in summary.get("consumers") or [] if int(c["pending"]) > 0}


def kill_a_worker(stack: Stack, view: JobView) -> None:
    """SIGKILL the worker that holds the job's batch (its messages are pending)."""
    wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "a batch to start")
    busy = _busy_consumers(stack)
    victim = next((w for w in stack.workers if w.log.stem in busy), stack.workers[0])
    stack.workers.remove(victim)
    victim.kill()
    stack.start_worker()


def restart_redis_empty(stack: Stack, view: JobView) -> None:
    wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "a batch to start")
    stack.redis_server.stop()  # SIGKILL; no persistence
    time.sleep(1)
    stack.redis_server.start()


def stop_postgres(stack: Stack, view: JobView) -> None:
    wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "a batch to start")
    stack.postgres.stop()
    time.sleep(10)
    stack.postgres.start()


def kill_the_api(stack: Stack, view: JobView) -> None:
    # Marked down before the signal: a request cut by the kill is not a drop by a live server
    # (the process lives for a moment after SIGKILL is sent).
    stack.api_killed = True
    stack.gateway.process.kill()
    stack.gateway.process.wait()
    stack.gateway.handle.close()
    stack.start_gateway()
    stack.api_killed = False


def pause_redis_writes(stack: Stack, view: JobView) -> None:
    wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "a worker to take the job")
    client = redis.Redis.from_url(stack.redis_server.url)
    client.execute_command("CLIENT", "PAUSE", "8000", "WRITE")
    client.close()


FAULTS = {
    "worker SIGKILL": kill_a_worker,
    "Redis SIGKILL + empty restart": restart_redis_empty,
    "Postgres stop 10 s": stop_postgres,
    "API SIGKILL": kill_the_api,
    "Redis write pause during invalidation": pause_redis_writes,
}


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
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    parser.add_argument("--faults", help="comma-separated subset of: " + ", ".join(FAULTS))
    args = parser.parse_args(argv)
    chosen = [f.strip() for f in args.faults.split(",")] if args.faults else list(FAULTS)

    directory = Path(tempfile.mkdtemp(prefix="promptrec-faults-"))
    postgres, redis_server = PostgresServer(), RedisServer(directory)
    postgres.start()
    redis_server.start()
    url = prepared_database(postgres.url, args.data)
    engine = make_sync_engine(url)
    load_prompt_set(engine, PROMPTS)
    env = worker_env(
        url,
        redis_server.url,
        MODEL,
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
            stack.gateway.close()
        for worker in stack.workers:
            worker.close()
        engine.dispose()
        redis_server.stop()
        postgres.remove()
        shutil.rmtree(directory, ignore_errors=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "command": "python bench/faults.py " + " ".join(argv or sys.argv[1:]),
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

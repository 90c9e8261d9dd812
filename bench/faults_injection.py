"""The faults `python -m bench.faults` injects, each while an admin job searches its users."""

from __future__ import annotations

import time

import redis

from bench.faults_stack import Stack
from promptrec.core.queue import GROUP
from tests.support.processes import wait_for
from tests.support.search_jobs import JobView


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
    stack.gateway.kill()
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

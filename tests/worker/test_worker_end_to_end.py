"""End to end through the HTTP API: cold MovieLens-100k users post events to a real gateway
process, a real worker process searches them (Redis Streams, Postgres), their prompts gain
personal tokens and their recommendations change. Also the embedded mode: no Redis, the
gateway runs the same worker in-process."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.cli.demo import cold_users, replay, summary
from promptrec.cli.gateway import gateway_app
from promptrec.models.rlm.model import RecLM
from tests.support.gateway_process import GatewayProcess
from tests.support.paths import SHIPPED_PROMPTS, SMALL_MODEL
from tests.support.private_servers import RedisServer
from tests.support.processes import wait_for
from tests.support.settings import ADMIN_KEY, service_settings, worker_env
from tests.support.worker_process import workers

# About one user in six keeps personal tokens (searches are deterministic per batch); 32 cold
# users make a run where none does unlikely.
REPLAYED = 32


def run_admin_job(url: str, user_ids: list[str]) -> dict:
    """An operator's search job through the API: 202, then polled until it is done."""
    import httpx

    headers = {"X-API-Key": ADMIN_KEY}
    created = httpx.post(
        f"{url}/v1/admin/prompt-search-jobs",
        json={"task": "sequential", "user_ids": user_ids},
        headers=headers,
    )
    assert created.status_code == 202, created.text
    job_url = f"{url}/v1/admin/prompt-search-jobs/{created.json()['job_id']}"
    view: dict = {}

    def done() -> bool:
        view.update(httpx.get(job_url, headers=headers).json())
        return view["status"] == "done"

    wait_for(done, 120, "the admin job to finish")
    return view


def test_cold_users_posting_events_get_searched_and_their_recommendations_change(
    tmp_path, movielens_dir, movielens_database, small_fingerprint
):
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    # The gateway searches nobody itself: the worker process does.
    env = worker_env(
        movielens_database,
        redis_server.url,
        SMALL_MODEL,
        admin_api_key=ADMIN_KEY,
        embedded_worker=False,
    )
    users = cold_users(movielens_dir, REPLAYED)
    gateway = GatewayProcess(env, tmp_path / "gateway.log")
    try:
        with workers(env, tmp_path) as start:
            start("only")
            results = asyncio.run(replay(gateway.url, users, timeout_s=120))
            job = run_admin_job(gateway.url, [users[0].user_id, "1"])
    finally:
        gateway.stop()
        redis_server.stop()
    assert job["status"] == "done" and job["counts"] == {"done": 2}
    assert {u["outcome"] for u in job["users"]} <= {"personalized", "task_level_kept"}
    assert [r.error for r in results] == [None] * REPLAYED
    assert all(r.searched for r in results), summary(results)
    personalized = [r for r in results if r.personalized]
    print(summary(results))
    assert personalized, "no replayed cold user kept personal tokens"
    for r in personalized:
        assert r.personal_tokens
        assert r.items_after != r.items_before  # the personal tokens changed the ranking
    for r in results:
        if not r.personalized:  # searched, task-level prompt kept: the same ranking
            assert r.items_after == r.items_before


def test_embedded_mode_runs_the_worker_in_the_gateway(tmp_path, movielens_dir):
    from promptrec.core.db.engine import make_sync_engine
    from promptrec.core.db.prompt_loader import load_prompt_set
    from tests.support.databases import prepared_database

    url = prepared_database(f"sqlite:///{tmp_path / 'embedded.db'}", movielens_dir)
    engine = make_sync_engine(url)
    load_prompt_set(engine, SHIPPED_PROMPTS)
    engine.dispose()
    settings = service_settings(
        url,
        model_path=SMALL_MODEL,
        embedded_worker=True,
        new_user_events=5,
        worker_scheduler_interval_s=0.5,
    )
    user = cold_users(movielens_dir, 1)[0]
    with TestClient(gateway_app(settings, lm=RecLM.load(SMALL_MODEL))) as client:
        runtime = client.app.state.runtime
        assert runtime.background_task is not None and runtime.queue.name == "in-process"
        events = [
            {"event_id": f"e{k}", "user_id": user.user_id, "item_id": item, "timestamp": 1000 + k}
            for k, item in enumerate(user.history)
        ]
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == len(events)

        def searched() -> bool:
            prompt = client.get(f"/v1/users/{user.user_id}/prompt", params={"task": "sequential"})
            return prompt.json()["version"] > 0

        wait_for(searched, 120, "the in-process worker to search the new user")


def test_a_personalized_user_with_new_events_gets_a_drift_check(tmp_path, movielens_dir):
    """After drift_events new events the scheduler queues a `drifting` job: the personal prompt
    is scored against the task-level one on those events, kept (no new version, counter reset)
    when it still wins, re-searched (a new version) when it does not."""
    import json

    from promptrec.core.db.engine import make_sync_engine
    from promptrec.core.db.prompt_loader import load_prompt_set
    from promptrec.core.db.tables import SearchJob, SearchJobUser, User
    from tests.support.databases import prepared_database

    prompts = SHIPPED_PROMPTS
    outcomes = json.loads(prompts.read_text())["users"]
    user = next(u for u, o in sorted(outcomes.items(), key=lambda x: int(x[0])) if o["kept"])
    url = prepared_database(f"sqlite:///{tmp_path / 'drift.db'}", movielens_dir)
    engine = make_sync_engine(url)
    load_prompt_set(engine, prompts)
    settings = service_settings(
        url,
        model_path=SMALL_MODEL,
        embedded_worker=True,
        drift_events=5,
        worker_scheduler_interval_s=0.5,
    )
    with TestClient(gateway_app(settings, lm=RecLM.load(SMALL_MODEL))) as client:
        before = client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"}).json()
        assert before["personalized"]
        events = [
            {"event_id": f"d{k}", "user_id": user, "item_id": str(item), "timestamp": 10**9 + k}
            for k, item in enumerate([50, 100, 181, 258, 286])
        ]
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 5

        def drift_job_done() -> bool:
            with Session(engine) as session:
                return (
                    session.scalar(
                        select(SearchJobUser.status)
                        .join(SearchJob)
                        .where(SearchJobUser.user_id == user, SearchJob.scope == "drifting")
                    )
                    == "done"
                )

        wait_for(drift_job_done, 120, "the drift check to finish")
        after = client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"}).json()
    with Session(engine) as session:
        outcome = session.scalar(select(SearchJobUser.outcome).where(SearchJobUser.user_id == user))
        assert session.get(User, user).events_since_search == 0
    engine.dispose()
    print("drift outcome:", outcome)
    if outcome == "personal_still_wins":
        assert after["version"] == before["version"]
    else:
        assert outcome in ("personalized", "task_level_kept")
        assert after["version"] == before["version"] + 1

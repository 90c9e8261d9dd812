"""End to end through the HTTP API: cold MovieLens-100k users post events to a real gateway
process, a real worker process searches them (Redis Streams, Postgres), their prompts gain
personal tokens and their recommendations change. Also the embedded mode: no Redis, the
gateway runs the same worker in-process."""

from __future__ import annotations

import asyncio

from conftest import SMALL_MODEL
from fastapi.testclient import TestClient
from gateway_testing import ADMIN_KEY, service_settings
from worker_testing import GatewayProcess, RedisServer, wait_for, worker_env, workers

from models.rlm.model import RecLM
from service.api.app import create_app
from service.demo import cold_users, replay, summary

# About one user in six keeps personal tokens (searches are deterministic per batch); 16 cold
# users make a run where none does unlikely.
REPLAYED = 16


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
    finally:
        gateway.close()
        redis_server.stop()
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
    from gateway_testing import prepared_database

    from service.db.engine import make_sync_engine
    from service.db.prompt_loader import load_prompt_set

    url = prepared_database(f"sqlite:///{tmp_path / 'embedded.db'}", movielens_dir)
    engine = make_sync_engine(url)
    load_prompt_set(engine, SMALL_MODEL.parent / "prompts" / "sequential.json")
    engine.dispose()
    settings = service_settings(
        url,
        model_path=SMALL_MODEL,
        embedded_worker=True,
        new_user_events=5,
        worker_scheduler_interval_s=0.5,
    )
    user = cold_users(movielens_dir, 1)[0]
    with TestClient(create_app(settings, lm=RecLM.load(SMALL_MODEL))) as client:
        runtime = client.app.state.runtime
        assert runtime.worker_task is not None and runtime.queue.name == "in-process"
        events = [
            {"event_id": f"e{k}", "user_id": user.user_id, "item_id": item, "timestamp": 1000 + k}
            for k, item in enumerate(user.history)
        ]
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == len(events)

        def searched() -> bool:
            prompt = client.get(f"/v1/users/{user.user_id}/prompt", params={"task": "sequential"})
            return prompt.json()["version"] > 0

        wait_for(searched, 120, "the in-process worker to search the new user")

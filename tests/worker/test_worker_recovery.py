"""The worker under failure, with real processes: `promptrec worker` OS processes, a real Redis
server and real Postgres (private servers where the test kills or restarts them), the shipped
small model and MovieLens-100k as `make run` loads them."""

from __future__ import annotations

import time

import redis
from sqlalchemy.orm import Session

from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.tables import User
from tests.support.paths import SHIPPED_PROMPTS, SMALL_MODEL
from tests.support.private_servers import PostgresServer
from tests.support.processes import wait_for
from tests.support.search_jobs import JobView, queue_job
from tests.support.settings import worker_env
from tests.support.worker_process import kill_mid_batch_then_finish, workers
from tests.worker.conftest import USERS, assert_every_user_has_one_new_version, queued_job


def test_a_worker_killed_mid_batch_loses_no_user(
    tmp_path, movielens_database, redis_server, small_fingerprint
):
    env, before, view = queued_job(movielens_database, redis_server.url, small_fingerprint)
    kill_mid_batch_then_finish(env, tmp_path, view, len(USERS))
    # The users the first worker held were claimed by the second after the idle timeout.
    assert_every_user_has_one_new_version(view, movielens_database, before)
    view.close()


def test_redis_restarted_mid_job_the_reconciler_re_enqueues(
    tmp_path, movielens_database, redis_server, small_fingerprint
):
    env, before, view = queued_job(movielens_database, redis_server.url, small_fingerprint)
    with workers(env, tmp_path) as start:
        worker = start("only")
        wait_for(lambda: view.statuses().get("done", 0) >= 8, 120, "a first batch to finish")
        redis_server.stop()  # no persistence: the stream, its group and the pending list are gone
        time.sleep(1.5)
        redis_server.start()
        wait_for(view.finished, 180, "the job to finish after Redis came back")
        assert worker.alive
        log = worker.output()
    assert_every_user_has_one_new_version(view, movielens_database, before)
    assert "re-enqueued searches" in log
    view.close()


def test_postgres_restarted_mid_job_the_worker_backs_off_and_recovers(
    tmp_path, movielens_dir, redis_server, small_fingerprint
):
    from promptrec.core.db.prompt_loader import load_prompt_set
    from tests.support.databases import prepared_database

    server = PostgresServer()
    try:
        server.start()
        url = prepared_database(server.url, movielens_dir)
        engine = make_sync_engine(url)
        load_prompt_set(engine, SHIPPED_PROMPTS)
        engine.dispose()
        env, before, view = queued_job(url, redis_server.url, small_fingerprint)
        with workers(env, tmp_path) as start:
            worker = start("only")
            wait_for(lambda: view.statuses().get("done", 0) >= 8, 120, "a first batch to finish")
            server.stop()
            # Down until the worker has hit the outage (a failed database call logs it), however
            # long its search batch takes: the outage overlaps a database call by construction.
            wait_for(
                lambda: "store unavailable" in worker.output(), 180, "the worker to meet the outage"
            )
            time.sleep(1)  # and a retry or two against the stopped server
            assert worker.alive  # waiting, not crashing
            server.start()
            wait_for(view.finished, 180, "the job to finish after Postgres came back")
            assert worker.alive
            log = worker.output()
        assert "store unavailable" in log
        assert log.count("worker started") == 1  # one process, no restart loop
        assert_every_user_has_one_new_version(view, url, before)
        view.close()
    finally:
        server.remove()


def test_a_user_that_cannot_be_searched_is_dead_lettered_at_once_with_its_reason(
    tmp_path, movielens_database, redis_server, small_fingerprint
):
    # A long claim timeout: a failure that no retry can mend must not wait for it.
    env = worker_env(movielens_database, redis_server.url, SMALL_MODEL, worker_claim_idle_s=600)
    engine = make_sync_engine(movielens_database)
    with Session(engine) as session, session.begin():
        session.add(User(user_id="no-history"))  # nothing to search on: the search raises
    engine.dispose()
    good = USERS[:7]
    job = queue_job(env, ["no-history", *good], small_fingerprint)
    view = JobView(movielens_database, job)
    with workers(env, tmp_path) as start:
        start("only")
        wait_for(view.finished, 120, "the job to finish")
    assert view.statuses() == {"done": 7, "failed": 1}
    failed = next(u for u in view.users() if u.status == "failed")
    assert failed.user_id == "no-history"
    assert failed.attempts == 1 and failed.error.startswith("NotEnoughHistory")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    dead = [fields for _, fields in client.xrange("worker-test:search:dead")]
    client.close()
    assert len(dead) == 1 and dead[0]["user_id"] == "no-history"
    assert dead[0]["job_id"] == job and "NotEnoughHistory" in dead[0]["reason"]
    view.close()


def test_sigterm_finishes_the_batch_in_hand_then_exits(
    tmp_path, movielens_database, redis_server, small_fingerprint
):
    env, _, view = queued_job(movielens_database, redis_server.url, small_fingerprint)
    with workers(env, tmp_path) as start:
        worker = start("only")
        wait_for(lambda: view.statuses().get("running", 0) > 0, 120, "a batch to start")
        assert worker.terminate(timeout=60) == 0
        log = worker.output()
    statuses = view.statuses()
    # The batch in hand was written and acknowledged; the rest waits for the next worker.
    assert statuses.get("running", 0) == 0 and statuses.get("done", 0) >= 8, statuses
    assert "worker stopped" in log
    view.close()

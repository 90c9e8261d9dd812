"""The worker, one real batch at a time (embedded database, in-process queue and cache, the tiny
model): a failure that cannot succeed on retry fails at once, a redelivered batch invalidates
the cache again, and a search follows the prompt set's stored settings."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from promptrec.core.cache import InProcessPromptCache
from promptrec.core.cached_reads import served_prompt
from promptrec.core.db.engine import make_async_engine, make_session_factory, make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import SearchJobUser, User
from promptrec.core.queue import LocalQueue, SearchTask
from promptrec.core.repositories import jobs
from promptrec.core.repositories import jobs as job_repo
from promptrec.core.repositories.prompts import SearchedPrompt
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet, UserOutcome
from promptrec.service.api.runtime import load_catalog
from promptrec.worker.runner import Worker
from tests.support.databases import prepared_database
from tests.support.settings import service_settings


async def _worker(url: str, lm, **settings) -> Worker:
    engine = make_async_engine(url)
    sessions = make_session_factory(engine)
    values = {"worker_claim_idle_s": 60.0, "worker_block_ms": 50, **settings}
    config = service_settings(url, **values)
    queue = LocalQueue(config.worker_claim_idle_s, config.worker_block_ms)
    catalog = await load_catalog(sessions, lm)
    return Worker(config, sessions, queue, InProcessPromptCache(), lm, catalog, lm.fingerprint())


async def _job(worker: Worker, user_ids: list[str], scope: str = "users") -> str:
    async with worker.sessions() as session:
        job = await jobs.create_job(session, "sequential", scope, worker.fingerprint, user_ids)
        await session.commit()
    await worker.queue.enqueue([SearchTask(job.job_id, u, "sequential") for u in user_ids])
    return job.job_id


async def _rows(worker: Worker, job_id: str) -> dict[str, SearchJobUser]:
    async with worker.sessions() as session:
        rows = await session.scalars(select(SearchJobUser).where(SearchJobUser.job_id == job_id))
        return {r.user_id: r for r in rows}


def test_a_user_without_enough_history_fails_at_once_with_its_reason(tmp_path, dataset_dir, lm):
    url = prepared_database(f"sqlite:///{tmp_path / 'w.db'}", dataset_dir)

    async def run():
        worker = await _worker(url, lm)
        async with worker.sessions() as session:
            session.add(User(user_id="no-history"))
            await session.commit()
        job_id = await _job(worker, ["no-history"])
        started = time.monotonic()
        await worker.process(await worker.queue.receive(8))
        rows = await _rows(worker, job_id)
        await worker.sessions.kw["bind"].dispose()
        return rows["no-history"], worker.queue, time.monotonic() - started

    row, queue, seconds = asyncio.run(run())
    assert row.status == "failed" and row.attempts == 1
    assert "NotEnoughHistory" in row.error
    assert [d["user_id"] for d in queue.dead] == ["no-history"]
    assert "NotEnoughHistory" in queue.dead[0]["reason"]
    assert seconds < 30  # not after the 60 s claim timeout


def test_a_redelivered_batch_of_a_finished_job_invalidates_the_cache_again(
    tmp_path, dataset_dir, lm
):
    """The worker committed the new version, then was killed (or Redis paused its writes)
    before invalidating: the redelivered message finds the row done and must invalidate."""
    url = prepared_database(f"sqlite:///{tmp_path / 'w.db'}", dataset_dir)

    async def run():
        worker = await _worker(url, lm)
        fingerprint = worker.fingerprint
        async with worker.sessions() as session:
            before = await served_prompt(session, worker.cache, "u1", "sequential", fingerprint)
        job_id = await _job(worker, ["u1"])
        search = SearchTask(job_id, "u1", "sequential")
        async with worker.sessions() as session:
            await job_repo.start_batch(session, [search])
        prompt = SearchedPrompt("u1", "sequential", fingerprint, ["war"], job_id=job_id)
        async with worker.sessions() as session:
            await job_repo.finish(session, [job_repo.Outcome(search, "personalized", prompt)])
        # ... killed here. The message is delivered again:
        report = await worker.process(await worker.queue.receive(8))
        async with worker.sessions() as session:
            after = await served_prompt(session, worker.cache, "u1", "sequential", fingerprint)
        await worker.sessions.kw["bind"].dispose()
        return before, after, report

    before, after, report = asyncio.run(run())
    assert before.version == 0 and report.skipped == 1
    assert after.personal_tokens == ("war",) and after.version == 1


def test_searches_and_drift_checks_use_the_prompt_sets_stored_settings(
    tmp_path, dataset_dir, lm, monkeypatch
):
    url = prepared_database(f"sqlite:///{tmp_path / 'w.db'}", dataset_dir)
    config = PaprecConfig(task_tokens=2, personal_tokens=3, max_cycles=1)
    state = PaprecState(task_tokens=["the", "the"])
    state.apply({"u1": UserOutcome(["the", "the", "the"], 0.1, 0.2, -5.0, -4.0, True)})
    path = tmp_path / "prompts.json"
    PromptSet("sequential", config, state, lm.fingerprint()).save(path)
    engine = make_sync_engine(url)
    load_prompt_set(engine, path)
    with Session(engine) as session, session.begin():
        session.execute(update(User).values(events_since_search=3))
    engine.dispose()

    compared, searched = [], []
    original_compare, original_search = PaprecSearch.compare_personal, PaprecSearch.search_personal

    def compare(self, examples, task_tokens, personal_tokens):
        compared.extend(len(p) for p in personal_tokens)
        return original_compare(self, examples, task_tokens, personal_tokens)

    def search(self, examples, task_tokens):
        searched.append(self.config.personal_tokens)
        return original_search(self, examples, task_tokens)

    monkeypatch.setattr(PaprecSearch, "compare_personal", compare)
    monkeypatch.setattr(PaprecSearch, "search_personal", search)

    async def run():
        worker = await _worker(url, lm)
        await _job(worker, ["u1"], scope="drifting")
        await _job(worker, ["u2"])
        for _ in range(2):
            await worker.process(await worker.queue.receive(1))
        await worker.sessions.kw["bind"].dispose()

    asyncio.run(run())
    assert compared == [3]  # the 3-token personal prompt was checked, not taken as lost
    assert searched and set(searched) == {3}

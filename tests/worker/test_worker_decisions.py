"""The worker's decisions, one batch at a time, with a stand-in searcher (the point here is the
branching: drift check -> keep or re-search, and one failing user isolated from the others;
the real search runs in the process tests)."""

from __future__ import annotations

from promptrec.core.queue import GROUP, Delivery, SearchTask
from promptrec.core.repositories.jobs import WorkItem
from promptrec.core.repositories.users import UserData
from promptrec.models.prompts.paprec.state import UserOutcome
from promptrec.models.user_context import ItemCatalog
from promptrec.worker.runner import BatchReport, Worker
from promptrec.worker.searcher import DriftCheck
from tests.support.settings import service_settings


class StandInSearcher:
    def __init__(self, personal_wins: dict[str, bool], failing: set[str] = frozenset()):
        self.personal_wins, self.failing = personal_wins, failing
        self.searched: list[str] = []
        self.checked: list[str] = []

    def check(self, user: UserData) -> None:
        pass

    def drift(self, users, task_tokens):
        self.checked += [u.user_id for u in users]
        return {
            u.user_id: DriftCheck(0.5, 0.6 if self.personal_wins[u.user_id] else 0.4) for u in users
        }

    def personal(self, users, task_tokens):
        if self.failing & {u.user_id for u in users}:
            raise RuntimeError("this user's data breaks the search")
        self.searched += [u.user_id for u in users]
        return {u.user_id: UserOutcome(["war", "love"], 0.1, 0.3, -2.0, -1.5, True) for u in users}


def _batch(scopes: dict[str, str]):
    deliveries, items, users = [], {}, {}
    for n, (user_id, scope) in enumerate(scopes.items()):
        search = SearchTask(f"job-{scope}", user_id, "sequential")
        deliveries.append(Delivery(str(n), search, 1, {}))
        items[search.key] = WorkItem(search, scope, "running", 1)
        users[user_id] = UserData(user_id, ["1", "2", "3"], None, None, None, ["old", "one"], 5)
    return deliveries, items, users


def _worker(lm, tmp_path, searcher) -> Worker:
    import pandas as pd

    items = pd.DataFrame({"item": lm.item_ids, "title": "", "genres": ""})
    catalog = ItemCatalog.from_counts(lm.item_ids, items, {})
    settings = service_settings(f"sqlite:///{tmp_path / 'unused.db'}")
    worker = Worker(settings, None, None, None, lm, catalog, "fp")
    worker.searcher = searcher
    return worker


def test_a_drift_check_keeps_a_winning_personal_prompt_and_re_searches_a_losing_one(lm, tmp_path):
    searcher = StandInSearcher({"winner": True, "loser": False})
    worker = _worker(lm, tmp_path, searcher)
    deliveries, items, users = _batch({"winner": "drifting", "loser": "drifting", "new": "new"})
    outcomes, errors, _final = worker._compute("sequential", deliveries, items, users, ["the"])
    assert errors == {}
    by_user = {o.search.user_id: o for o in outcomes}
    assert by_user["winner"].outcome == "personal_still_wins" and by_user["winner"].prompt is None
    assert by_user["loser"].outcome == "personalized"
    assert by_user["loser"].prompt.tokens == ["war", "love"]
    assert by_user["new"].outcome == "personalized"
    assert sorted(searcher.checked) == ["loser", "winner"]  # only drifting jobs are checked
    assert sorted(searcher.searched) == ["loser", "new"]


def test_one_failing_user_does_not_fail_the_batch(lm, tmp_path):
    searcher = StandInSearcher({}, failing={"poison"})
    worker = _worker(lm, tmp_path, searcher)
    scopes = {f"u{k}": "users" for k in range(7)} | {"poison": "users"}
    deliveries, items, users = _batch(scopes)
    outcomes, errors, _final = worker._compute("sequential", deliveries, items, users, ["the"])
    assert sorted(o.search.user_id for o in outcomes) == sorted(u for u in scopes if u != "poison")
    assert list(errors) == [("job-users", "poison")]
    assert "breaks the search" in errors[("job-users", "poison")]


def test_the_scheduler_retries_a_failed_new_user_only_after_new_events(tmp_path):
    import asyncio

    from sqlalchemy import update

    from promptrec.core.db import migrate
    from promptrec.core.db.engine import make_async_engine, make_session_factory
    from promptrec.core.db.tables import User
    from promptrec.core.repositories import jobs as job_repo

    url = f"sqlite:///{tmp_path / 'scheduler.db'}"
    migrate.upgrade(url)

    async def run() -> list[list[str]]:
        engine = make_async_engine(url)
        sessions = make_session_factory(engine)

        async def due() -> list[SearchTask]:
            async with sessions() as session:
                return await job_repo.schedule_due(session, "sequential", "fp", 5, 5)

        async with sessions() as session:
            session.add(User(user_id="u", event_count=6, events_since_search=6))
            await session.commit()
        first = await due()
        async with sessions() as session:  # the search failed for good (dead-lettered)
            await job_repo.record_error(session, first[0], "NotEnoughHistory", final=True)
        second = await due()  # no new events since: not again
        async with sessions() as session:
            await session.execute(update(User).values(events_since_search=5))
            await session.commit()
        third = await due()  # five new events since the failure: once more
        await engine.dispose()
        return [[s.user_id for s in found] for found in (first, second, third)]

    assert asyncio.run(run()) == [["u"], [], ["u"]]


def test_the_heartbeat_stops_when_the_batch_ends(lm, tmp_path, redis_prefix):
    """With heartbeats back to back, the batch usually ends while redis-py is sending one; on
    Python 3.11 a cancel landing there is lost. The heartbeat must stop anyway, or a message the
    batch left unacknowledged (a failed user) stays fresh and no worker ever reclaims it."""
    import asyncio

    from promptrec.core.queue import StreamQueue
    from tests.support.databases import REDIS_URL

    async def run() -> list[int]:
        queue = StreamQueue(REDIS_URL, redis_prefix, "heartbeat-test", claim_idle_s=1)
        await queue.enqueue([SearchTask("job", "u", "sequential")])
        worker = _worker(lm, tmp_path, StandInSearcher({}))
        worker.settings = worker.settings.model_copy(update={"worker_heartbeat_s": 1e-4})
        worker.queue = queue

        async def slow_batch(deliveries):
            await asyncio.sleep(0.3)
            return BatchReport(failed=len(deliveries))  # nothing acknowledged

        worker._process = slow_batch
        deliveries = await queue.receive(1)
        idle = []
        for _ in range(5):
            await worker.process(deliveries)
            await asyncio.sleep(0.3)
            pending = await queue.client.xpending_range(queue.stream, GROUP, "-", "+", 1)
            idle.append(pending[0]["time_since_delivered"])
        await queue.client.delete(queue.stream)
        await queue.close()
        return idle

    # idle since the batch ended: at least the 300 ms slept since, had no heartbeat run on
    assert all(ms >= 250 for ms in asyncio.run(run()))

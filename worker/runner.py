"""The worker loop: receive a batch of (job, user) messages, search, write, acknowledge.

Order of a batch, which is what makes it crash-safe: mark the rows running -> search (in a
thread) -> write every user's new prompt version in one transaction -> invalidate their cache
entries -> XACK. A crash anywhere before the XACK leaves the messages pending; a peer claims
them after the claim timeout and the idempotent write makes a second delivery harmless. A store
that is down (Postgres, Redis) is retried with capped exponential backoff, never a crash loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.exceptions
from sqlalchemy.ext.asyncio import async_sessionmaker

from promptrec.core.cache import PromptCache
from promptrec.core.cached_reads import invalidate_user_prompt
from promptrec.core.db.tables import FINISHED_STATUSES, JobOutcome
from promptrec.core.observability import (
    WORKER_BATCH_SECONDS,
    WORKER_DEAD_LETTERS,
    WORKER_USERS,
)
from promptrec.core.outages import STORE_ERRORS
from promptrec.core.queue import Delivery, SearchQueue, SearchTask
from promptrec.core.repositories import jobs as job_repo
from promptrec.core.repositories import prompts as prompt_repo
from promptrec.core.repositories import users as user_repo
from promptrec.core.repositories.prompts import SearchedPrompt
from promptrec.core.settings import Settings
from promptrec.core.soft_composer import LoadedComposer
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.state import UserOutcome
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog
from promptrec.worker.outcomes import batch_outcomes
from promptrec.worker.retry import Backoff, set_within
from promptrec.worker.rpp_searcher import RppSearcher, rpp_outcomes
from promptrec.worker.searcher import PersonalSearcher
from promptrec.worker.soft_searcher import SoftSearcher, soft_outcomes

log = logging.getLogger("promptrec.worker")

# A heartbeat that fails for any Redis reason is retried at the next beat, never fatal.
HEARTBEAT_ERRORS: tuple[type[Exception], ...] = (*STORE_ERRORS, redis.exceptions.RedisError)


@dataclass
class BatchReport:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # duplicates and messages of finished jobs


class Worker:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker,
        queue: SearchQueue,
        cache: PromptCache,
        lm: RecLM,
        catalog: ItemCatalog,
        fingerprint: str,
        soft: LoadedComposer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.queue = queue
        self.cache = cache
        self.fingerprint = fingerprint
        self.lm, self.catalog = lm, catalog
        self.searcher = PersonalSearcher(lm, catalog)  # the default settings
        self._searchers: dict[PaprecConfig, PersonalSearcher] = {}
        self._rpp: RppSearcher | None = None  # loaded at the first RPP job
        # Soft jobs fit with the composer loaded beside the model (none: they wait for a
        # worker that has one).
        self.soft = SoftSearcher(lm, catalog, soft) if soft is not None else None
        self.backoff = Backoff(settings.worker_max_backoff_s)
        self._stop = asyncio.Event()
        self._next_schedule = 0.0
        self._next_reconcile = 0.0
        self._reconciled_once = False

    def searcher_for(self, config: PaprecConfig) -> PersonalSearcher:
        """The searcher of a prompt set's settings (one per distinct config, kept)."""
        if config == self.searcher.config:
            return self.searcher
        if config not in self._searchers:
            self._searchers[config] = PersonalSearcher(self.lm, self.catalog, config)
        return self._searchers[config]

    def rpp_searcher(self) -> RppSearcher:
        """RPP's policy and settings (`rpp_choices_path`), loaded once."""
        if self._rpp is None:
            self._rpp = RppSearcher.from_file(self.lm, self.catalog, self.settings.rpp_choices_path)
        return self._rpp

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run` (SIGTERM lands here)."""
        self._stop.set()

    async def _pause(self, seconds: float) -> None:
        await set_within(self._stop, seconds)

    async def run(self) -> None:
        log.info("worker started", extra={"queue": self.queue.name, "model": self.fingerprint})
        while not self._stop.is_set():
            try:
                await self.tick()
                self.backoff.reset()
            except STORE_ERRORS as error:
                delay = self.backoff.next()
                log.warning(
                    "store unavailable, retrying",
                    extra={"error": f"{type(error).__name__}: {error}"[:300], "retry_in_s": delay},
                )
                await self._pause(delay)
            except Exception:
                # Anything else (a Redis reply the worker did not expect, a bug) is logged and
                # retried with the same backoff: messages not acknowledged are delivered again.
                delay = self.backoff.next()
                log.exception("worker step failed", extra={"retry_in_s": delay})
                await self._pause(delay)
        log.info("worker stopped")

    async def tick(self) -> BatchReport | None:
        """Reconcile and schedule when due, then one batch (waits up to the block time)."""
        now = time.monotonic()
        if now >= self._next_reconcile:
            await self.reconcile()
            self._next_reconcile = now + self.settings.worker_reconcile_interval_s
        if now >= self._next_schedule:
            await self.schedule()
            self._next_schedule = now + self.settings.worker_scheduler_interval_s
        deliveries = await self.queue.receive(self.settings.worker_batch_size)
        if not deliveries:
            return None
        return await self.process(deliveries)

    # ---- Postgres is the source of truth ---------------------------------------------------
    async def reconcile(self) -> int:
        """Re-enqueue (job, user) rows still to do that no queue holds (Redis lost them, or the
        gateway died between its commit and its enqueue)."""
        # The first pass after a start takes every row: an in-process queue starts empty.
        grace = self.settings.worker_reconcile_grace_s if self._reconciled_once else 0.0
        queued = await self.queue.queued()
        async with self.sessions() as session:
            missing = await job_repo.unqueued(session, queued, grace)
        if missing:
            await self.queue.enqueue(missing)
            log.info("re-enqueued searches", extra={"count": len(missing)})
        self._reconciled_once = True
        return len(missing)

    async def schedule(self) -> int:
        """Jobs for new users and drift candidates (one scheduler at a time across workers)."""
        total = 0
        for task in self.settings.worker_tasks:
            if not await self.queue.try_lock(
                f"scheduler:{task}", self.settings.worker_scheduler_interval_s * 0.9
            ):
                continue
            async with self.sessions() as session:
                due = await job_repo.schedule_due(
                    session,
                    task,
                    self.fingerprint,
                    self.settings.new_user_events,
                    self.settings.drift_events,
                    self.settings.strategy,
                )
            if due:
                await self.queue.enqueue(due)
                log.info("scheduled searches", extra={"task": task, "count": len(due)})
            total += len(due)
        return total

    # ---- one batch -------------------------------------------------------------------------
    async def process(self, deliveries: list[Delivery]) -> BatchReport:
        started = time.perf_counter()
        batch_over = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(deliveries, batch_over))
        try:
            while True:
                try:
                    report = await self._process(deliveries)
                    break
                except STORE_ERRORS as error:
                    # Keep the batch (and its heartbeat) rather than let it be redelivered:
                    # an outage must not count as a failed delivery.
                    if self._stop.is_set():
                        raise
                    delay = self.backoff.next()
                    log.warning(
                        "store unavailable mid-batch, retrying",
                        extra={"error": f"{type(error).__name__}"[:300], "retry_in_s": delay},
                    )
                    await self._pause(delay)
        finally:
            # Stopped by an event and awaited, never cancelled: on Python 3.11 a cancel that lands
            # while redis-py sends a command is lost (its asyncio.wait_for drops it), and a
            # heartbeat left running keeps a failed message fresh, so no worker reclaims it.
            batch_over.set()
            await heartbeat
        WORKER_BATCH_SECONDS.observe(time.perf_counter() - started)
        log.info(
            "batch done",
            extra={
                "users": len(deliveries),
                "done": report.done,
                "failed": report.failed,
                "skipped": report.skipped,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return report

    async def _heartbeat(self, deliveries: list[Delivery], batch_over: asyncio.Event) -> None:
        while not await set_within(batch_over, self.settings.worker_heartbeat_s):
            try:
                await self.queue.heartbeat(deliveries)
            except HEARTBEAT_ERRORS as error:
                log.warning("heartbeat failed", extra={"error": type(error).__name__})

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        if delivery.search is not None:
            async with self.sessions() as session:
                await job_repo.record_error(session, delivery.search, reason, final=True)
        await self.queue.dead_letter(delivery, reason)
        WORKER_DEAD_LETTERS.inc()
        log.error(
            "dead-lettered",
            extra={
                "message_id": delivery.message_id,
                "deliveries": delivery.deliveries,
                "reason": reason,
            },
        )

    async def _process(self, deliveries: list[Delivery]) -> BatchReport:
        report = BatchReport()
        live: list[Delivery] = []
        for d in deliveries:
            if d.search is None:
                await self._dead_letter(d, f"unreadable message fields {sorted(d.raw)}")
                report.failed += 1
            elif d.deliveries > self.settings.worker_max_deliveries:
                async with self.sessions() as session:
                    last = await job_repo.last_error(session, d.search)
                await self._dead_letter(
                    d, f"delivered {d.deliveries} times; last error: {last or 'none recorded'}"
                )
                report.failed += 1
            else:
                live.append(d)
        if not live:
            return report
        async with self.sessions() as session:
            items = await job_repo.start_batch(session, [d.parsed for d in live])
        finished = [
            d
            for d in live
            if d.parsed.key not in items or items[d.parsed.key].status in FINISHED_STATUSES
        ]
        # A redelivery of a finished user: the delivery before may have committed and died (or
        # met paused Redis writes) before its invalidation, so invalidate again, then ack.
        for d in finished:
            await invalidate_user_prompt(
                self.cache, self.fingerprint, d.parsed.task, d.parsed.user_id
            )
        await self.queue.ack(finished)
        report.skipped += len(finished)
        todo = [d for d in live if d not in finished]
        for task, strategy in sorted({(d.parsed.task, items[d.parsed.key].strategy) for d in todo}):
            batch = [
                d for d in todo if (d.parsed.task, items[d.parsed.key].strategy) == (task, strategy)
            ]
            done, failed = await self._search_task(task, strategy, batch, items)
            report.done += done
            report.failed += failed
        return report

    async def _search_task(
        self,
        task: str,
        strategy: str,
        batch: list[Delivery],
        items: dict[tuple[str, str], job_repo.WorkItem],
    ) -> tuple[int, int]:
        async with self.sessions() as session:
            prompt = await prompt_repo.task_prompt(session, task, self.fingerprint)
            users = await user_repo.load_users(
                session, [d.parsed.user_id for d in batch], task, self.fingerprint
            )

        def compute():
            searches = [d.parsed for d in batch]
            if strategy == StrategyName.RPP:
                return rpp_outcomes(self.rpp_searcher(), self.fingerprint, searches, items, users)
            if strategy == StrategyName.SOFT:
                return soft_outcomes(self.soft, self.fingerprint, searches, items, users)
            searcher = self.searcher_for(prompt.config)
            return self._compute(task, batch, items, users, prompt.tokens, searcher)

        outcomes, errors, final = await asyncio.to_thread(compute)
        async with self.sessions() as session:
            written = await job_repo.finish(session, outcomes)
        for search in written:
            await invalidate_user_prompt(self.cache, self.fingerprint, task, search.user_id)
        for o in outcomes:
            WORKER_USERS.labels(o.outcome).inc()
        ok = {o.search.key for o in outcomes}
        await self.queue.ack([d for d in batch if d.parsed.key in ok])
        # A failure no retry can mend (too little history, the user gone) fails at once.
        for d in batch:
            if d.parsed.key in final:
                await self._dead_letter(d, errors[d.parsed.key])
                WORKER_USERS.labels("error").inc()
        # Any other failed user is not acknowledged: the message is delivered again after the
        # claim timeout, until the delivery limit moves it to the dead-letter stream.
        for d in batch:
            if d.parsed.key in errors and d.parsed.key not in final:
                async with self.sessions() as session:
                    await job_repo.record_error(
                        session, d.parsed, errors[d.parsed.key], final=False
                    )
                WORKER_USERS.labels("error").inc()
                log.warning(
                    "search failed",
                    extra={
                        "user": d.parsed.user_id,
                        "job": d.parsed.job_id,
                        "error": errors[d.parsed.key][:300],
                    },
                )
        return len(outcomes), len(errors)

    def _compute(
        self,
        task: str,
        batch: list[Delivery],
        items: dict[tuple[str, str], job_repo.WorkItem],
        users: dict[str, user_repo.UserData],
        tokens: list[str],
        searcher: PersonalSearcher | None = None,
    ) -> tuple[list[job_repo.Outcome], dict[tuple[str, str], str], set[tuple[str, str]]]:
        """PAP-REC's personal search of the batch on top of the task tokens (`batch_outcomes`)."""
        searcher = searcher or self.searcher

        def outcome(search: SearchTask, result: UserOutcome) -> job_repo.Outcome:
            prompt = SearchedPrompt(
                user_id=search.user_id,
                task=task,
                fingerprint=self.fingerprint,
                tokens=list(result.tokens) if result.kept else [],
                metric_before=result.surrogate_before,
                metric_after=result.surrogate_after if result.kept else result.surrogate_before,
                metrics={
                    "searched_surrogate": result.surrogate_after,
                    "held_out_logp_before": result.held_out_logp_before,
                    "held_out_logp_after": result.held_out_logp_after,
                },
                job_id=search.job_id,
            )
            kept = JobOutcome.PERSONALIZED if result.kept else JobOutcome.TASK_LEVEL_KEPT
            return job_repo.Outcome(search, kept, prompt)

        return batch_outcomes(
            [d.parsed for d in batch],
            items,
            users,
            searcher.check,
            lambda us: searcher.drift(us, tokens),
            lambda us: searcher.personal(us, tokens),
            outcome,
        )

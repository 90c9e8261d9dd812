"""Prompt-search jobs and their per-user rows: queued by the gateway and the scheduler,
executed by the workers.

Every write is idempotent: a (job, user) already done is skipped, and a user's new prompt
version is unique per (user, task, job), so a message delivered twice writes one version.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from promptrec.core.db.tables import (
    ACTIVE_STATUSES,
    DEFAULT_STRATEGY,
    FINISHED_STATUSES,
    JobOutcome,
    JobScope,
    JobStatus,
    SearchJob,
    SearchJobUser,
    User,
    UserPrompt,
)
from promptrec.core.queue import SearchTask
from promptrec.core.repositories import users
from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt


async def create_job(
    session: AsyncSession,
    task: str,
    scope: JobScope,
    fingerprint: str,
    user_ids: list[str],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    strategy: str = DEFAULT_STRATEGY,
) -> SearchJob:
    """A queued job with one row per distinct user (in the order first given)."""
    job = SearchJob(
        job_id=uuid.uuid4().hex,
        task=task,
        scope=scope,
        strategy=strategy,
        status=JobStatus.QUEUED,
        model_fingerprint=fingerprint,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    job.users = [SearchJobUser(user_id=u, status=JobStatus.QUEUED) for u in dict.fromkeys(user_ids)]
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, job_id: str) -> SearchJob | None:
    return await session.scalar(
        select(SearchJob).where(SearchJob.job_id == job_id).options(selectinload(SearchJob.users))
    )


async def job_by_idempotency_key(session: AsyncSession, key: str) -> SearchJob | None:
    return await session.scalar(
        select(SearchJob)
        .where(SearchJob.idempotency_key == key)
        .options(selectinload(SearchJob.users))
    )


@dataclass(frozen=True)
class WorkItem:
    search: SearchTask
    scope: JobScope  # DRIFTING asks for a drift check before a search
    status: JobStatus  # the (job, user) row's status when the batch started
    attempts: int
    strategy: str = DEFAULT_STRATEGY  # the job's prompt strategy


async def start_batch(
    session: AsyncSession, searches: list[SearchTask]
) -> dict[tuple[str, str], WorkItem]:
    """Mark the batch's (job, user) rows running and count the attempt; rows already finished
    come back with their status so the caller only acknowledges them."""
    keys = [s.key for s in searches]
    rows = (
        await session.execute(
            select(SearchJobUser, SearchJob.scope, SearchJob.strategy)
            .join(SearchJob)
            .where(
                SearchJobUser.job_id.in_({k[0] for k in keys}),
                SearchJobUser.user_id.in_({k[1] for k in keys}),
            )
            .with_for_update(of=SearchJobUser)
        )
    ).all()
    by_key = {(row.job_id, row.user_id): (row, scope, strategy) for row, scope, strategy in rows}
    out = {}
    for s in searches:
        if s.key not in by_key:
            continue
        row, scope, strategy = by_key[s.key]
        if row.status not in FINISHED_STATUSES:
            row.status = JobStatus.RUNNING
            row.attempts += 1
        out[s.key] = WorkItem(s, JobScope(scope), JobStatus(row.status), row.attempts, strategy)
    job_ids = {s.job_id for s in searches}
    await session.execute(
        update(SearchJob)
        .where(SearchJob.job_id.in_(job_ids), SearchJob.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING)
    )
    await session.commit()
    return out


@dataclass(frozen=True)
class Outcome:
    """A finished (job, user): `prompt` is written as the user's next version when given."""

    search: SearchTask
    outcome: JobOutcome
    prompt: SearchedPrompt | None


async def finish(session: AsyncSession, outcomes: list[Outcome]) -> list[SearchTask]:
    """Write the outcomes in one transaction; returns the searches whose prompt version was
    written (their cache entries are invalidated after the commit)."""
    written = []
    # In user order: two workers finishing overlapping users lock their rows in one order.
    for o in sorted(outcomes, key=lambda o: (o.search.user_id, o.search.job_id)):
        row = await session.get(SearchJobUser, o.search.key, with_for_update=True)
        if row is None or row.status in FINISHED_STATUSES:
            continue  # a duplicate delivery, already recorded
        if o.prompt is not None:
            already = await session.scalar(
                select(
                    exists().where(
                        UserPrompt.user_id == o.search.user_id,
                        UserPrompt.task == o.search.task,
                        UserPrompt.job_id == o.search.job_id,
                    )
                )
            )
            if not already:
                await add_user_prompt(session, o.prompt)
                written.append(o.search)
        else:
            # The personal prompt still wins on the recent events: no new version, but the
            # drift counter starts again.
            await _restart_event_count(session, o.search.user_id)
        row.status, row.outcome, row.error = JobStatus.DONE, o.outcome, None
    await session.flush()
    await _close_finished_jobs(session, {o.search.job_id for o in outcomes})
    await session.commit()
    return written


async def last_error(session: AsyncSession, search: SearchTask) -> str | None:
    row = await session.get(SearchJobUser, search.key)
    return row.error if row is not None else None


async def record_error(session: AsyncSession, search: SearchTask, error: str, final: bool) -> None:
    """A search that raised: the reason is kept on the (job, user) row; `final` (dead-lettered)
    marks it failed, otherwise it waits for the next delivery."""
    row = await session.get(SearchJobUser, search.key, with_for_update=True)
    if row is None or row.status in FINISHED_STATUSES:
        return
    row.error = error[:2000]
    if final:
        row.status = JobStatus.FAILED
        # Like a search, a final failure restarts the user's event count: the scheduler tries
        # again only after drift_events new events, not at every tick.
        await _restart_event_count(session, search.user_id)
    await session.flush()
    await _close_finished_jobs(session, {search.job_id})
    await session.commit()


async def _restart_event_count(session: AsyncSession, user_id: str) -> None:
    await session.execute(update(User).where(User.user_id == user_id).values(events_since_search=0))


async def _close_finished_jobs(session: AsyncSession, job_ids: set[str]) -> None:
    for job_id in job_ids:
        active = await session.scalar(
            select(func.count())
            .select_from(SearchJobUser)
            .where(SearchJobUser.job_id == job_id, SearchJobUser.status.in_(ACTIVE_STATUSES))
        )
        if not active:
            await session.execute(
                update(SearchJob).where(SearchJob.job_id == job_id).values(status=JobStatus.DONE)
            )


def _has_job_row(task: str, *statuses: str):
    """The user has a (job, user) row of a job for `task` in one of these statuses."""
    return exists().where(
        SearchJobUser.user_id == User.user_id,
        SearchJobUser.status.in_(statuses),
        SearchJobUser.job_id == SearchJob.job_id,
        SearchJob.task == task,
    )


async def schedule_due(
    session: AsyncSession,
    task: str,
    fingerprint: str,
    new_user_events: int,
    drift_events: int,
    strategy: str = DEFAULT_STRATEGY,
) -> list[SearchTask]:
    """Jobs for users that are due and not already in an active job: new users (enough events,
    never searched for the task; after a failed search, enough new events since) and drift
    candidates (enough events since their search)."""
    out: list[SearchTask] = []
    retry_new = ~_has_job_row(task, JobStatus.FAILED) | (User.events_since_search >= drift_events)
    for scope, extra in ((JobScope.NEW, retry_new), (JobScope.DRIFTING, true())):
        condition = users.due(scope, task, new_user_events, drift_events) & extra
        user_ids = list(
            await session.scalars(
                select(User.user_id)
                .where(condition, ~_has_job_row(task, *ACTIVE_STATUSES))
                .order_by(User.user_id)
            )
        )
        if user_ids:
            job = await create_job(session, task, scope, fingerprint, user_ids, strategy=strategy)
            out.extend(SearchTask(job.job_id, u, task) for u in user_ids)
    await session.commit()
    return out


async def unqueued(
    session: AsyncSession, queued: set[tuple[str, str]], grace_s: float
) -> list[SearchTask]:
    """(job, user) rows still to do, older than the grace period, that no queue holds."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_s)
    rows = await session.execute(
        select(SearchJobUser.job_id, SearchJobUser.user_id, SearchJob.task)
        .join(SearchJob)
        .where(SearchJobUser.status.in_(ACTIVE_STATUSES), SearchJobUser.updated_at <= cutoff)
        .order_by(SearchJobUser.updated_at)
    )
    return [SearchTask(j, u, t) for j, u, t in rows if (j, u) not in queued]

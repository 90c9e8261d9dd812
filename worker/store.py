"""What the worker reads from and writes to the database (the source of truth).

Every write is idempotent: a (job, user) already done is skipped, and a user's new prompt
version is unique per (user, task, job), so a message delivered twice writes one version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import exists, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.prompts.paprec.config import PaprecConfig
from service.db.tables import Interaction, SearchJob, SearchJobUser, User, UserPrompt
from service.repositories import jobs, users
from service.repositories.prompts import (
    SearchedPrompt,
    add_user_prompt,
    current_prompt_set,
    current_user_prompts,
    stored_config,
)
from worker.queue import SearchTask

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed")


@dataclass(frozen=True)
class UserData:
    user_id: str
    history: list[str]  # item ids, oldest first
    age: float | None
    gender: str | None
    occupation: str | None
    personal_tokens: list[str]  # current personal prompt (empty: the task-level prompt)
    events_since_search: int


@dataclass(frozen=True)
class WorkItem:
    search: SearchTask
    scope: str  # the job's scope; "drifting" asks for a drift check before a search
    status: str  # the (job, user) row's status when the batch started
    attempts: int


async def start_batch(
    session: AsyncSession, searches: list[SearchTask]
) -> dict[tuple[str, str], WorkItem]:
    """Mark the batch's (job, user) rows running and count the attempt; rows already finished
    come back with their status so the caller only acknowledges them."""
    keys = [s.key for s in searches]
    rows = (
        await session.execute(
            select(SearchJobUser, SearchJob.scope)
            .join(SearchJob)
            .where(
                SearchJobUser.job_id.in_({k[0] for k in keys}),
                SearchJobUser.user_id.in_({k[1] for k in keys}),
            )
            .with_for_update(of=SearchJobUser)
        )
    ).all()
    by_key = {(row.job_id, row.user_id): (row, scope) for row, scope in rows}
    out = {}
    for s in searches:
        if s.key not in by_key:
            continue
        row, scope = by_key[s.key]
        if row.status not in FINISHED:
            row.status = "running"
            row.attempts += 1
        out[s.key] = WorkItem(s, scope, row.status, row.attempts)
    job_ids = {s.job_id for s in searches}
    await session.execute(
        update(SearchJob)
        .where(SearchJob.job_id.in_(job_ids), SearchJob.status == "queued")
        .values(status="running")
    )
    await session.commit()
    return out


@dataclass(frozen=True)
class TaskPrompt:
    """The task's current prompt set: its tokens, and the settings it was searched with (which
    every personal search and drift check on top of it uses)."""

    tokens: list[str]
    config: PaprecConfig


async def task_prompt(session: AsyncSession, task: str, fingerprint: str) -> TaskPrompt:
    row = await current_prompt_set(session, task, fingerprint)
    return TaskPrompt(list(row.tokens) if row is not None else [], stored_config(row))


async def load_users(
    session: AsyncSession, user_ids: Iterable[str], task: str, fingerprint: str
) -> dict[str, UserData]:
    user_ids = list(dict.fromkeys(user_ids))
    rows_of = {
        u.user_id: u for u in await session.scalars(select(User).where(User.user_id.in_(user_ids)))
    }
    histories: dict[str, list[str]] = {u: [] for u in rows_of}
    interactions = await session.execute(
        select(Interaction.user_id, Interaction.item_id)
        .where(Interaction.user_id.in_(list(rows_of)))
        .order_by(Interaction.user_id, Interaction.timestamp, Interaction.id)
    )
    for user_id, item_id in interactions:
        histories[user_id].append(item_id)
    prompts = await current_user_prompts(session, list(rows_of), task, fingerprint)
    return {
        user_id: UserData(
            user_id,
            histories[user_id],
            user.age,
            user.gender,
            user.occupation,
            list(prompts[user_id].tokens) if user_id in prompts else [],
            user.events_since_search,
        )
        for user_id, user in rows_of.items()
    }


@dataclass(frozen=True)
class Outcome:
    """A finished (job, user): `prompt` is written as the user's next version when given."""

    search: SearchTask
    outcome: str  # personalized | task_level_kept | personal_still_wins
    prompt: SearchedPrompt | None


async def finish(session: AsyncSession, outcomes: list[Outcome]) -> list[SearchTask]:
    """Write the outcomes in one transaction; returns the searches whose prompt version was
    written (their cache entries are invalidated after the commit)."""
    written = []
    # In user order: two workers finishing overlapping users lock their rows in one order.
    for o in sorted(outcomes, key=lambda o: (o.search.user_id, o.search.job_id)):
        row = await session.get(SearchJobUser, o.search.key, with_for_update=True)
        if row is None or row.status in FINISHED:
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
        row.status, row.outcome, row.error = "done", o.outcome, None
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
    if row is None or row.status in FINISHED:
        return
    row.error = error[:2000]
    if final:
        row.status = "failed"
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
            .where(SearchJobUser.job_id == job_id, SearchJobUser.status.in_(ACTIVE))
        )
        if not active:
            await session.execute(
                update(SearchJob).where(SearchJob.job_id == job_id).values(status="done")
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
    session: AsyncSession, task: str, fingerprint: str, new_user_events: int, drift_events: int
) -> list[SearchTask]:
    """Jobs for users that are due and not already in an active job: new users (enough events,
    never searched for the task; after a failed search, enough new events since) and drift
    candidates (enough events since their search)."""
    out = []
    retry_new = ~_has_job_row(task, "failed") | (User.events_since_search >= drift_events)
    for scope, extra in (("new", retry_new), ("drifting", true())):
        condition = users.due(scope, task, new_user_events, drift_events) & extra
        user_ids = list(
            await session.scalars(
                select(User.user_id)
                .where(condition, ~_has_job_row(task, *ACTIVE))
                .order_by(User.user_id)
            )
        )
        if user_ids:
            job = await jobs.create_job(session, task, scope, fingerprint, user_ids)
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
        .where(SearchJobUser.status.in_(ACTIVE), SearchJobUser.updated_at <= cutoff)
        .order_by(SearchJobUser.updated_at)
    )
    return [SearchTask(j, u, t) for j, u, t in rows if (j, u) not in queued]

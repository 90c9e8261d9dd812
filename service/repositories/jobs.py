"""Prompt-search jobs and their per-user rows (the worker executes them; here they are queued)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from service.db.tables import SearchJob, SearchJobUser


async def create_job(
    session: AsyncSession,
    task: str,
    scope: str,
    fingerprint: str,
    user_ids: list[str],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> SearchJob:
    """A queued job with one row per distinct user (in the order first given)."""
    job = SearchJob(
        job_id=uuid.uuid4().hex,
        task=task,
        scope=scope,
        status="queued",
        model_fingerprint=fingerprint,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    job.users = [SearchJobUser(user_id=u, status="queued") for u in dict.fromkeys(user_ids)]
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

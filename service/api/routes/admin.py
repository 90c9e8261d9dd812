"""Admin routes (X-API-Key): prompt-search jobs and prompt rollback."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, status
from sqlalchemy.exc import IntegrityError

from promptrec.core.cached_reads import invalidate_user_prompt
from promptrec.core.db.tables import JobScope, JobStatus, SearchJob
from promptrec.core.outages import STORE_ERRORS
from promptrec.core.queue import SearchTask
from promptrec.core.repositories import jobs, users
from promptrec.core.repositories import prompts as prompt_repo
from promptrec.models.prompts.names import StrategyName
from promptrec.service.api.access import AdminRoute
from promptrec.service.api.deps import AdminDep, RuntimeDep, SessionDep
from promptrec.service.api.routes.prompts import served_prompt_view
from promptrec.service.api.schemas import (
    ID_PATTERN,
    JobCreate,
    JobCreated,
    JobUserView,
    JobView,
    Problem,
    PromptView,
    Task,
)

log = logging.getLogger("promptrec.api")

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    route_class=AdminRoute,
    dependencies=[AdminDep],
    responses={
        401: {"model": Problem, "description": "missing X-API-Key"},
        403: {"model": Problem, "description": "wrong API key"},
    },
)

UserId = Annotated[str, Path(pattern=ID_PATTERN, description="the user's id")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the job's id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=ID_PATTERN,
        description="a key of the client's choosing: the same request posted again with it "
        "answers the job the first one made",
    ),
]


@router.post(
    "/prompt-search-jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobCreated,
    responses={
        409: {"model": Problem, "description": "strategy soft without a usable composer"},
        422: {"model": Problem, "description": "invalid input or unknown users"},
    },
)
async def create_search_job(
    body: JobCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> JobCreated:
    """Queue a prompt search for the given users, or for a scope: `new` (no personal prompt yet
    and enough events), `drifting` (enough events since the last search), `all`; with
    `strategy` (paprec, rpp or soft; default: PROMPTREC_STRATEGY). With an
    `Idempotency-Key`, the same request posted again answers the job the first one made
    (nobody is searched twice); the key reused for another request is a 422."""
    settings = runtime.settings
    request_hash = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    if idempotency_key is not None:
        existing = await jobs.job_by_idempotency_key(session, idempotency_key)
        if existing is not None:
            return _replayed(existing, request_hash)
    strategy = body.strategy or settings.strategy
    if strategy == StrategyName.SOFT and runtime.soft is None:
        # The workers could not fit anyone: say so now rather than fail every user later.
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the soft strategy needs a soft-prompt composer: {runtime.soft_problem}",
        )
    if body.user_ids is not None:
        missing = set(body.user_ids) - await users.existing_user_ids(session, body.user_ids)
        if missing:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"unknown users: {', '.join(sorted(missing)[:20])}",
            )
        scope, user_ids = JobScope.USERS, body.user_ids
    else:
        scope = JobScope(body.scope or JobScope.ALL)
        user_ids = await users.scope_user_ids(
            session, scope, body.task, settings.new_user_events, settings.drift_events
        )
    job = await jobs.create_job(
        session,
        body.task,
        scope,
        runtime.fingerprint,
        user_ids,
        idempotency_key,
        request_hash,
        strategy=strategy,
    )
    if not job.users:
        job.status = JobStatus.DONE  # nothing to search
    try:
        await session.commit()
    except IntegrityError:
        if idempotency_key is None:
            raise
        # The same key posted concurrently: the other request made the job.
        await session.rollback()
        existing = await jobs.job_by_idempotency_key(session, idempotency_key)
        if existing is None:
            raise
        return _replayed(existing, request_hash)
    try:
        await runtime.queue.enqueue(
            [SearchTask(job.job_id, u.user_id, body.task) for u in job.users]
        )
    except STORE_ERRORS as error:
        # The job is committed: the workers' reconciler enqueues it once Redis is back.
        log.warning(
            "could not enqueue job", extra={"job": job.job_id, "error": type(error).__name__}
        )
    return _created(job)


def _created(job: SearchJob) -> JobCreated:
    return JobCreated(
        job_id=job.job_id,
        status=job.status,
        task=job.task,
        scope=job.scope,
        strategy=job.strategy,
        user_count=len(job.users),  # distinct users
    )


def _replayed(job: SearchJob, request_hash: str) -> JobCreated:
    if job.request_hash != request_hash:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "this Idempotency-Key was used for another request; use a new key",
        )
    return _created(job)


@router.get(
    "/prompt-search-jobs/{job_id}",
    response_model=JobView,
    responses={404: {"model": Problem, "description": "unknown job"}},
)
async def get_search_job(job_id: JobId, session: SessionDep) -> JobView:
    job = await jobs.get_job(session, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown job {job_id}")
    return JobView(
        job_id=job.job_id,
        task=job.task,
        scope=job.scope,
        strategy=job.strategy,
        status=job.status,
        model=job.model_fingerprint,
        created_at=job.created_at,
        updated_at=job.updated_at,
        counts=dict(Counter(u.status for u in job.users)),
        users=[
            JobUserView(
                user_id=u.user_id,
                status=u.status,
                outcome=u.outcome,
                error=u.error,
                attempts=u.attempts,
            )
            for u in job.users
        ],
    )


@router.post(
    "/users/{user_id}/prompt/rollback",
    response_model=PromptView,
    responses={
        404: {"model": Problem, "description": "unknown user"},
        409: {"model": Problem, "description": "no personal prompt to roll back"},
    },
)
async def roll_back_prompt(
    user_id: UserId,
    task: Annotated[Task, Query(description="sequential or direct")],
    runtime: RuntimeDep,
    session: SessionDep,
) -> PromptView:
    """Drop the user's current personal prompt version: the previous one is served again (or
    the task-level prompt after version 1). The dropped version stays in the database."""
    if await users.get_user(session, user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {user_id}")
    result = await prompt_repo.roll_back_user_prompt(session, user_id, task, runtime.fingerprint)
    if result is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "the user has no personal prompt")
    await session.commit()
    await invalidate_user_prompt(runtime.cache, runtime.fingerprint, task, user_id)
    return await served_prompt_view(runtime, session, user_id, task)

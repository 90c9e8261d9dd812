"""A prompt-search job queued as the gateway queues it, and its state read from the database."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from promptrec.core.db.engine import make_async_engine, make_session_factory, make_sync_engine
from promptrec.core.db.tables import SearchJob, SearchJobUser, UserPrompt
from promptrec.core.queue import SearchTask, StreamQueue
from promptrec.core.repositories import jobs


def queue_job(
    env: dict[str, str], user_ids: list[str], fingerprint: str, scope="users", strategy="paprec"
) -> str:
    """What `POST /v1/admin/prompt-search-jobs` does: commit the job, then enqueue its users."""

    async def run() -> str:
        engine = make_async_engine(env["PROMPTREC_DATABASE_URL"])
        try:
            async with make_session_factory(engine)() as session:
                job = await jobs.create_job(
                    session, "sequential", scope, fingerprint, user_ids, strategy=strategy
                )
                await session.commit()
            queue = StreamQueue(env["PROMPTREC_REDIS_URL"], env["PROMPTREC_REDIS_KEY_PREFIX"], "t")
            await queue.enqueue([SearchTask(job.job_id, u, "sequential") for u in user_ids])
            await queue.close()
            return job.job_id
        finally:
            await engine.dispose()

    return asyncio.run(run())


class JobView:
    """Reads a job's state straight from the database."""

    def __init__(self, database_url: str, job_id: str) -> None:
        self.engine = make_sync_engine(database_url)
        self.job_id = job_id

    def statuses(self) -> dict[str, int]:
        with Session(self.engine) as session:
            rows = session.execute(
                select(SearchJobUser.status, func.count())
                .where(SearchJobUser.job_id == self.job_id)
                .group_by(SearchJobUser.status)
            ).all()
        return dict(rows)

    def job_status(self) -> str:
        with Session(self.engine) as session:
            return session.scalar(select(SearchJob.status).where(SearchJob.job_id == self.job_id))

    def finished(self) -> bool:
        try:
            return self.job_status() == "done"
        except Exception:
            return False

    def users(self) -> list[SearchJobUser]:
        with Session(self.engine) as session:
            return list(
                session.scalars(select(SearchJobUser).where(SearchJobUser.job_id == self.job_id))
            )

    def versions_written(self) -> dict[str, int]:
        """Prompt versions this job wrote, per user."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(UserPrompt.user_id, func.count())
                .where(UserPrompt.job_id == self.job_id)
                .group_by(UserPrompt.user_id)
            ).all()
        return dict(rows)

    def close(self) -> None:
        self.engine.dispose()


def prompt_versions(database_url: str, user_ids: list[str]) -> dict[str, int]:
    """Prompt versions per user (users with none left out)."""
    engine = make_sync_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(UserPrompt.user_id, func.count())
                .where(UserPrompt.user_id.in_(user_ids))
                .group_by(UserPrompt.user_id)
            ).all()
        return {user: n for user, n in rows}
    finally:
        engine.dispose()

"""What the app holds from startup to shutdown: database, cache, model, catalogue, batcher."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from models.ranking import item_scorer
from models.rlm.model import RecLM
from service.batching import MicroBatcher
from service.cache import PromptCache, make_cache
from service.db import migrate
from service.db.engine import make_async_engine, make_session_factory
from service.db.tables import Interaction
from service.inference import Catalog, Ranked, Ranker, RankRequest
from service.repositories import items as item_repo
from service.settings import Settings
from worker.queue import SearchQueue, make_queue
from worker.runner import Worker

log = logging.getLogger("promptrec.runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    cache: PromptCache
    lm: RecLM
    fingerprint: str
    catalog: Catalog
    batcher: MicroBatcher[RankRequest, Ranked]
    queue: SearchQueue  # where admin jobs are enqueued (the workers' stream, or in-process)
    worker: Worker | None = None  # the embedded worker (no Redis) and its task
    worker_task: asyncio.Task | None = None

    async def close(self) -> None:
        if self.worker_task is not None:
            self.worker.stop()
            await self.worker_task
        await self.queue.close()
        await self.batcher.stop()
        await self.cache.close()
        await self.engine.dispose()


async def load_catalog(sessions: async_sessionmaker, lm: RecLM) -> Catalog:
    """Make sure every item the model ranks has a row (events may name it), then read titles,
    genres and interaction counts for the catalogue."""
    async with sessions() as session:
        rows = await item_repo.all_items(session)
        known = {r.item_id for r in rows}
        missing = [i for i in lm.item_ids if i not in known]
        for start in range(0, len(missing), 5000):
            await item_repo.ensure_items(session, missing[start : start + 5000])
        await session.commit()
        counts = dict(
            (
                await session.execute(
                    select(Interaction.item_id, func.count()).group_by(Interaction.item_id)
                )
            ).all()
        )
    items = pd.DataFrame(
        [(r.item_id, r.title, r.genres) for r in rows], columns=["item", "title", "genres"]
    )
    return Catalog.build(lm.item_ids, items, counts)


async def start_runtime(settings: Settings, lm: RecLM | None = None) -> Runtime:
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
    engine = make_async_engine(settings.database_url, settings.database_pool_size)
    sessions = make_session_factory(engine)
    if lm is None:
        lm = await asyncio.to_thread(RecLM.load, settings.model_path, settings.device)
    lm.model.eval()
    await asyncio.to_thread(item_scorer, lm)  # trace the ranking graph now, not in a request
    fingerprint = await asyncio.to_thread(lm.fingerprint)
    catalog = await load_catalog(sessions, lm)
    cache = make_cache(settings.redis_url, settings.redis_key_prefix, settings.prompt_cache_ttl_s)
    batcher: MicroBatcher[RankRequest, Ranked] = MicroBatcher(
        Ranker(lm).rank, settings.max_batch_size, settings.max_wait_ms, settings.queue_limit
    )
    await batcher.start()
    queue = make_queue(settings, consumer=f"gateway-{socket.gethostname()}-{os.getpid()}")
    runtime = Runtime(settings, engine, sessions, cache, lm, fingerprint, catalog, batcher, queue)
    # Embedded: the API process searches too (from the in-process queue, or as one more consumer
    # of the Redis stream); deployments with `promptrec worker` processes turn it off.
    if settings.embedded_worker:
        runtime.worker = Worker(settings, sessions, queue, cache, lm, catalog, fingerprint)
        runtime.worker_task = asyncio.create_task(runtime.worker.run(), name="embedded-worker")
    log.info(
        "ready",
        extra={
            "model": fingerprint,
            "items": lm.n_items,
            "cache": cache.name,
            "queue": queue.name,
            "embedded_worker": runtime.worker_task is not None,
        },
    )
    return runtime

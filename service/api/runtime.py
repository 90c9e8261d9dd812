"""What the app holds from startup to shutdown: database, cache, model, catalogue, batcher, and
the soft-prompt composer where one is configured for the model."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from promptrec.core.cache import PromptCache, make_cache
from promptrec.core.catalog import load_catalog
from promptrec.core.db import migrate
from promptrec.core.db.engine import make_async_engine, make_session_factory
from promptrec.core.queue import SearchQueue, make_queue
from promptrec.core.settings import Settings
from promptrec.core.soft_composer import LoadedComposer, configured_composer
from promptrec.models.ranking import item_scorer, slot_scorer
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog
from promptrec.service.batching import MicroBatcher
from promptrec.service.inference import Ranked, Ranker, RankRequest

log = logging.getLogger("promptrec.runtime")


class BackgroundJob(Protocol):
    """Work the gateway process runs beside the API until shutdown (the embedded worker)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


BackgroundFactory = Callable[["Runtime"], BackgroundJob]


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    cache: PromptCache
    lm: RecLM
    fingerprint: str
    catalog: ItemCatalog
    batcher: MicroBatcher[RankRequest, Ranked]
    queue: SearchQueue  # where admin jobs are enqueued (the workers' stream, or in-process)
    soft: LoadedComposer | None = None  # what soft searches fit with (the embedded worker's)
    soft_problem: str | None = None  # why there is no composer, for readiness and admin jobs
    background: BackgroundJob | None = None
    background_task: asyncio.Task | None = None

    async def close(self) -> None:
        if self.background is not None and self.background_task is not None:
            self.background.stop()
            await self.background_task
        await self.queue.close()
        await self.batcher.stop()
        await self.cache.close()
        await self.engine.dispose()


async def start_runtime(
    settings: Settings, lm: RecLM | None = None, background: BackgroundFactory | None = None
) -> Runtime:
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
    engine = make_async_engine(settings.database_url, settings.database_pool_size)
    sessions = make_session_factory(engine)
    if lm is None:
        lm = await asyncio.to_thread(RecLM.load, settings.model_path, settings.device)
    lm.model.eval()
    # Trace the ranking graphs now, not in a request: token ids, and token ids with soft
    # vectors (a batch with a soft version's vectors).
    await asyncio.to_thread(item_scorer, lm)
    await asyncio.to_thread(slot_scorer, lm)
    fingerprint = await asyncio.to_thread(lm.fingerprint)
    soft, soft_problem = await asyncio.to_thread(configured_composer, settings, lm, fingerprint)
    catalog = await load_catalog(sessions, lm)
    cache = make_cache(settings.redis_url, settings.redis_key_prefix, settings.prompt_cache_ttl_s)
    batcher: MicroBatcher[RankRequest, Ranked] = MicroBatcher(
        Ranker(lm).rank, settings.max_batch_size, settings.max_wait_ms, settings.queue_limit
    )
    await batcher.start()
    queue = make_queue(settings, consumer=f"gateway-{socket.gethostname()}-{os.getpid()}")
    runtime = Runtime(
        settings,
        engine,
        sessions,
        cache,
        lm,
        fingerprint,
        catalog,
        batcher,
        queue,
        soft,
        soft_problem,
    )
    if background is not None:
        runtime.background = background(runtime)
        runtime.background_task = asyncio.create_task(runtime.background.run(), name="background")
    log.info(
        "ready",
        extra={
            "model": fingerprint,
            "items": lm.n_items,
            "cache": cache.name,
            "queue": queue.name,
            "background": runtime.background_task is not None,
            "soft_composer": soft.fingerprint if soft is not None else None,
        },
    )
    return runtime

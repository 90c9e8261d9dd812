"""`promptrec worker`: one process (per GPU), Redis Streams consumer, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from promptrec.core.cache import make_cache
from promptrec.core.catalog import load_catalog
from promptrec.core.db.engine import make_async_engine, make_session_factory
from promptrec.core.outages import STORE_ERRORS
from promptrec.core.queue import make_queue
from promptrec.core.settings import Settings
from promptrec.core.soft_composer import ComposerUnavailable, configured_composer
from promptrec.models.prompts.names import StrategyName
from promptrec.models.rlm.model import RecLM
from promptrec.worker.retry import Backoff
from promptrec.worker.runner import Worker

log = logging.getLogger("promptrec.worker")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def run_worker(settings: Settings, lm: RecLM, consumer: str) -> None:
    """Serve until SIGTERM/SIGINT: the batch in hand is finished (written and acknowledged)
    before the process exits; anything not acknowledged is reclaimed by a peer. With the soft
    strategy active and no usable composer it does not start (`ComposerUnavailable` says why)."""
    fingerprint = lm.fingerprint()
    soft, problem = configured_composer(settings, lm, fingerprint)
    if soft is None and settings.strategy == StrategyName.SOFT:
        raise ComposerUnavailable(f"PROMPTREC_STRATEGY=soft: {problem}")
    engine = make_async_engine(settings.database_url, settings.database_pool_size)
    sessions = make_session_factory(engine)
    queue = make_queue(settings, consumer)
    cache = make_cache(settings.redis_url, settings.redis_key_prefix, settings.prompt_cache_ttl_s)
    try:
        backoff = Backoff(settings.worker_max_backoff_s)
        while True:  # the database may still be starting (compose, a restart)
            try:
                catalog = await load_catalog(sessions, lm)
                break
            except STORE_ERRORS as error:
                delay = backoff.next()
                log.warning(
                    "database unavailable",
                    extra={"error": type(error).__name__, "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
        worker = Worker(settings, sessions, queue, cache, lm, catalog, fingerprint, soft)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        log.info("worker ready", extra={"consumer": consumer, "device": str(lm.device)})
        await worker.run()
    finally:
        await queue.close()
        await cache.close()
        await engine.dispose()

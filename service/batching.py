"""Dynamic micro-batching: requests queue up, one model call serves up to `max_batch_size`.

A batch closes when it is full or `max_wait_ms` after its first request arrived (0: with what
is queued when the model is free). The model call runs in a worker thread, so the event loop
keeps accepting requests meanwhile. The queue is bounded (`Overloaded` -> 429) and every
request has a deadline (`DeadlineExceeded` -> 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from promptrec.core.observability import (
    BATCH_SIZE,
    COMPUTE_SECONDS,
    QUEUE_DEPTH,
    QUEUE_REJECTED,
    QUEUE_SECONDS,
)

log = logging.getLogger("promptrec.batching")

Req = TypeVar("Req")
Res = TypeVar("Res")


class Overloaded(Exception):
    """The queue is full; the client should retry after a moment."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its result was ready."""


@dataclass
class _Pending(Generic[Req, Res]):
    request: Req
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    future: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher(Generic[Req, Res]):
    def __init__(
        self,
        compute: Callable[[Sequence[Req]], Sequence[Res]],
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
        queue_limit: int = 1024,
    ) -> None:
        self.compute = compute
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_limit = queue_limit
        self._queue: asyncio.Queue[_Pending[Req, Res]] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_limit)
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def submit(self, request: Req, timeout_s: float) -> Res:
        if self._queue is None or not self.running:
            raise RuntimeError("the batcher is not running")
        pending: _Pending[Req, Res] = _Pending(request, time.monotonic() + timeout_s)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            QUEUE_REJECTED.labels("queue_full").inc()
            raise Overloaded from None
        QUEUE_DEPTH.set(self._queue.qsize())
        # A timer on the loop rather than wait_for(shield(...)): no extra futures per request.
        # A caller that goes away cancels its future, and the batcher skips it.
        timer = asyncio.get_running_loop().call_later(timeout_s, self._expire, pending)
        try:
            return await pending.future
        finally:
            timer.cancel()

    @staticmethod
    def _expire(pending: _Pending[Req, Res]) -> None:
        if not pending.future.done():
            QUEUE_REJECTED.labels("deadline").inc()
            pending.future.set_exception(DeadlineExceeded())

    async def _collect(self) -> list[_Pending[Req, Res]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        closes = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = closes - time.monotonic()
            if remaining <= 0:
                break
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose the cancel
                # that `stop` sends, and `stop` would then wait forever.
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        QUEUE_DEPTH.set(self._queue.qsize())
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            now = time.monotonic()
            live = [p for p in batch if not p.future.done() and p.deadline > now]
            if not live:
                continue
            for p in live:
                QUEUE_SECONDS.observe(now - p.enqueued)
            BATCH_SIZE.observe(len(live))
            started = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.compute, [p.request for p in live])
            except Exception as error:  # one bad batch must not stop the loop
                log.exception("batched model call failed")
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            finally:
                COMPUTE_SECONDS.observe(time.perf_counter() - started)
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)

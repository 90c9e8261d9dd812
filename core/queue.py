"""The search queue: one message per (job, user, task), Redis Streams or in-process.

Redis: a consumer group reads the stream (`XREADGROUP COUNT B`); a message stays in its
consumer's pending list until `XACK` (then it is also `XDEL`ed, so the stream holds exactly the
messages not yet done, which is what the reconciler compares Postgres against). A worker keeps
its in-flight messages fresh by re-claiming them to itself (`XCLAIM ... JUSTID` resets the idle
time); peers `XAUTOCLAIM` messages idle longer than the claim timeout; a message delivered more
than the allowed number of times is moved to the dead-letter stream.

In-process (no Redis): the same interface over an asyncio queue, for the embedded gateway.
Postgres stays the source of truth in both cases: the reconciler refills either queue from it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from promptrec.core.settings import Settings

GROUP = "search-workers"


@dataclass(frozen=True)
class SearchTask:
    job_id: str
    user_id: str
    task: str

    @property
    def key(self) -> tuple[str, str]:
        return self.job_id, self.user_id


@dataclass(frozen=True)
class Delivery:
    message_id: str
    search: SearchTask | None  # None: a message whose fields cannot be read
    deliveries: int
    raw: dict[str, str]

    @property
    def parsed(self) -> SearchTask:
        """`search` of a delivery known to be readable (the worker sets the others aside first)."""
        if self.search is None:
            raise ValueError(f"message {self.message_id} has unreadable fields {sorted(self.raw)}")
        return self.search


class SearchQueue(Protocol):
    name: str

    async def enqueue(self, searches: list[SearchTask]) -> None: ...

    async def receive(self, count: int) -> list[Delivery]: ...

    async def heartbeat(self, deliveries: list[Delivery]) -> None: ...

    async def ack(self, deliveries: list[Delivery]) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...

    async def queued(self) -> set[tuple[str, str]]: ...

    async def try_lock(self, name: str, ttl_s: float) -> bool: ...

    async def close(self) -> None: ...


def _parse(message_id: str, fields: dict[str, str], deliveries: int) -> Delivery:
    try:
        search = SearchTask(fields["job_id"], fields["user_id"], fields["task"])
    except KeyError:
        search = None
    return Delivery(message_id, search, deliveries, dict(fields))


class StreamQueue:
    """Redis Streams with one consumer group; `consumer` names this worker in the group."""

    name = "redis-streams"

    def __init__(
        self,
        url: str,
        prefix: str,
        consumer: str,
        block_ms: int = 1000,
        claim_idle_s: float = 60.0,
    ) -> None:
        self.client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=max(5.0, block_ms / 1000 + 5),
            socket_connect_timeout=5.0,
        )
        self.stream = f"{prefix}search:stream"
        self.dead = f"{prefix}search:dead"
        self.lock_prefix = f"{prefix}search:lock:"
        self.consumer = consumer
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self._group_ready = False

    async def _ensure_group(self) -> None:
        # Start at 0, not $: after Redis lost the group (restart, stream deleted), the messages
        # the reconciler put back must all be read.
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def _with_group(self, call):
        if not self._group_ready:
            await self._ensure_group()
        try:
            return await call()
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self._ensure_group()
            return await call()

    async def enqueue(self, searches: list[SearchTask]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for s in searches:
                pipe.xadd(self.stream, {"job_id": s.job_id, "user_id": s.user_id, "task": s.task})
            await pipe.execute()

    async def _delivery_counts(self, message_ids: list[str]) -> dict[str, int]:
        counts = {}
        for message_id in message_ids:
            rows = await self.client.xpending_range(
                self.stream, GROUP, min=message_id, max=message_id, count=1
            )
            counts[message_id] = int(rows[0]["times_delivered"]) if rows else 1
        return counts

    async def receive(self, count: int) -> list[Delivery]:
        """Messages idle past the claim timeout first (a crashed peer's), then new ones."""

        async def claim():
            return await self.client.xautoclaim(
                self.stream, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=count
            )

        _, claimed, _ = await self._with_group(claim)
        claimed = [(mid, fields) for mid, fields in claimed if fields]
        counts = await self._delivery_counts([mid for mid, _ in claimed])
        out = [_parse(mid, fields, counts[mid]) for mid, fields in claimed]
        if len(out) < count:

            async def read():
                return await self.client.xreadgroup(
                    GROUP,
                    self.consumer,
                    {self.stream: ">"},
                    count=count - len(out),
                    # BLOCK 0 would wait forever: with claimed messages in hand, no BLOCK.
                    block=None if out else self.block_ms,
                )

            for _stream, messages in await self._with_group(read) or []:
                out.extend(_parse(mid, fields, 1) for mid, fields in messages)
        return out

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await self.client.xclaim(
                self.stream,
                GROUP,
                self.consumer,
                0,
                [d.message_id for d in deliveries],
                justid=True,
            )

    async def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            ids = [d.message_id for d in deliveries]
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, *ids)
                pipe.xdel(self.stream, *ids)
                await pipe.execute()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry = {
            **delivery.raw,
            "message_id": delivery.message_id,
            "deliveries": str(delivery.deliveries),
            "reason": reason,
        }
        # redis-py types the fields as an invariant Dict[FieldT, EncodableT] (a Mapping would
        # do: it only reads them), so no dict[str, str] fits; the call is right as it is.
        await self.client.xadd(self.dead, entry)  # type: ignore[arg-type]
        await self.ack([delivery])

    async def queued(self) -> set[tuple[str, str]]:
        out = set()
        start = "-"
        while True:
            # decode_responses=True: ids and fields come back as str.
            page = cast(
                "list[tuple[str, dict[str, str]]]",
                await self.client.xrange(self.stream, min=start, count=1000),
            )
            for _, fields in page:
                if "job_id" in fields and "user_id" in fields:
                    out.add((fields["job_id"], fields["user_id"]))
            if len(page) < 1000:
                return out
            start = "(" + page[-1][0]

    async def try_lock(self, name: str, ttl_s: float) -> bool:
        return bool(
            await self.client.set(
                self.lock_prefix + name, self.consumer, nx=True, px=int(ttl_s * 1000)
            )
        )

    async def close(self) -> None:
        await self.client.aclose()


class _WaitingQueue(asyncio.Queue[SearchTask]):
    # asyncio.Queue keeps its items in this deque (set by its _init); typeshed leaves it out.
    _queue: deque[SearchTask]

    def snapshot(self) -> list[SearchTask]:
        """The searches waiting, oldest first, without taking them."""
        return list(self._queue)


class LocalQueue:
    """In-process: one consumer, no redelivery across processes (the reconciler refills it
    from the database after a restart). A failed message is offered again after the claim
    timeout, like a Redis message a peer reclaims, until it is dead-lettered."""

    name = "in-process"

    def __init__(self, claim_idle_s: float = 60.0, block_ms: int = 1000) -> None:
        self._queue = _WaitingQueue()
        self._pending: dict[str, tuple[SearchTask, int, float]] = {}
        self._next_id = 0
        self.claim_idle_s = claim_idle_s
        self.block_ms = block_ms
        self.dead: list[dict[str, str]] = []

    def _message(self, search: SearchTask, deliveries: int) -> Delivery:
        raw = {"job_id": search.job_id, "user_id": search.user_id, "task": search.task}
        self._next_id += 1
        return Delivery(str(self._next_id), search, deliveries, raw)

    async def enqueue(self, searches: list[SearchTask]) -> None:
        for s in searches:
            self._queue.put_nowait(s)

    async def receive(self, count: int) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        out: list[Delivery] = []
        for message_id, (search, deliveries, since) in list(self._pending.items()):
            if len(out) < count and now - since >= self.claim_idle_s:
                del self._pending[message_id]
                out.append(self._message(search, deliveries + 1))
        if not out and self._queue.empty():
            try:
                async with asyncio.timeout(self.block_ms / 1000):
                    first = await self._queue.get()
            except TimeoutError:
                return []
            out.append(self._message(first, 1))
        while len(out) < count and not self._queue.empty():
            out.append(self._message(self._queue.get_nowait(), 1))
        for d in out:
            self._pending[d.message_id] = (d.parsed, d.deliveries, loop.time())
        return out

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        now = asyncio.get_running_loop().time()
        for d in deliveries:
            if d.message_id in self._pending:
                search, n, _ = self._pending[d.message_id]
                self._pending[d.message_id] = (search, n, now)

    async def ack(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            self._pending.pop(d.message_id, None)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead.append({**delivery.raw, "deliveries": str(delivery.deliveries), "reason": reason})
        await self.ack([delivery])

    async def queued(self) -> set[tuple[str, str]]:
        waiting = {s.key for s in self._queue.snapshot()}
        return waiting | {s.key for s, _, _ in self._pending.values()}

    async def try_lock(self, name: str, ttl_s: float) -> bool:
        return True

    async def close(self) -> None:
        return None


def make_queue(settings: Settings, consumer: str) -> SearchQueue:
    """The Redis stream when a Redis URL is set, else the in-process queue."""
    if settings.redis_url is None:
        return LocalQueue(settings.worker_claim_idle_s, settings.worker_block_ms)
    return StreamQueue(
        settings.redis_url,
        settings.redis_key_prefix,
        consumer,
        settings.worker_block_ms,
        settings.worker_claim_idle_s,
    )

"""The hot per-user cache (prompts, user contexts): Redis, or in-process with the same interface.

Values are JSON objects. Redis failures never reach a request: a failed read is a miss (the
caller reads the database), a failed write is skipped, and `healthy` turns false until a ping
succeeds again; every entry has a TTL so a missed invalidation heals by itself.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from promptrec.core.observability import CACHE_LOOKUPS

log = logging.getLogger("promptrec.cache")


class PromptCache(Protocol):
    name: str

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]: ...

    async def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        """Stores the value for `ttl_s` seconds (default: the cache's TTL)."""

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class InProcessPromptCache:
    """A bounded LRU dict with expiry; one per process."""

    name = "in-process"

    def __init__(self, ttl_s: float = 3600.0, max_entries: int = 200_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        now = time.monotonic()
        out: list[dict[str, Any] | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or entry[0] < now:
                self._entries.pop(key, None)
                CACHE_LOOKUPS.labels("miss").inc()
                out.append(None)
            else:
                self._entries.move_to_end(key)
                CACHE_LOOKUPS.labels("hit").inc()
                out.append(entry[1])
        return out

    async def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        self._entries[key] = (time.monotonic() + (ttl_s or self.ttl_s), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


class RedisPromptCache:
    """redis-py asyncio client; keys carry a prefix so deployments and tests can share a server."""

    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "promptrec:",
        ttl_s: int = 3600,
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
    ) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._down_until = 0.0  # after a failure, skip Redis for a moment instead of waiting

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if self.healthy:
            log.warning("redis unavailable, serving from the database", extra={"error": str(error)})
        self._down_until = time.monotonic() + self.retry_after_s

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        from redis.exceptions import RedisError

        if not self.healthy:
            CACHE_LOOKUPS.labels("error").inc(len(keys))
            return [None] * len(keys)
        try:
            raw = await self._client.mget([self.prefix + k for k in keys])
        except (RedisError, OSError) as error:
            self._failed(error)
            CACHE_LOOKUPS.labels("error").inc(len(keys))
            return [None] * len(keys)
        out = []
        for value in raw:
            CACHE_LOOKUPS.labels("miss" if value is None else "hit").inc()
            out.append(None if value is None else json.loads(value))
        return out

    async def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        from redis.exceptions import RedisError

        if not self.healthy:
            return
        expiry_ms = int((ttl_s or self.ttl_s) * 1000)
        try:
            await self._client.set(self.prefix + key, json.dumps(value), px=expiry_ms)
        except (RedisError, OSError) as error:
            self._failed(error)

    async def delete(self, *keys: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._client.delete(*[self.prefix + k for k in keys])
        except (RedisError, OSError) as error:
            self._failed(error)

    async def ping(self) -> bool:
        from redis.exceptions import RedisError

        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            self._failed(error)
            return False
        self._down_until = 0.0
        return True

    async def close(self) -> None:
        await self._client.aclose()


def make_cache(redis_url: str | None, prefix: str, ttl_s: int) -> PromptCache:
    if redis_url:
        return RedisPromptCache(redis_url, prefix, ttl_s)
    return InProcessPromptCache(ttl_s)

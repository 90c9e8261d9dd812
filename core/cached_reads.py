"""What serving a user reads on every request, cache-aside: the prompt and the user's context.

The prompt's task-level and personal parts are cached under their own keys; whoever commits a
new version (the worker, a rollback) calls `invalidate_user_prompt` / `invalidate_task_prompt`
right after the commit. An invalidation can be lost (the committer killed in between, Redis
writes paused), so a cached prompt part carries the time it was read and is read again after
`prompt_refresh_s`: a lost invalidation is healed in seconds, not by the TTL. While the database
is down, a part past that age is still served (stale if error) rather than failing the request.
The user's context (profile and history) is cached too, so a hot user's
recommendation reads no database at all; event ingestion calls `invalidate_user_contexts` after
its commit, and a short TTL bounds staleness from writers that cannot (the dataset loader, or a
read that raced an invalidation).
A soft version's vectors travel in the user's part as base64 (cache values are JSON): about
2.7 KB for the shipped model (8 x 64 float32).
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from promptrec.core.cache import PromptCache
from promptrec.core.db.engine import DATABASE_UNAVAILABLE
from promptrec.core.repositories import interactions, prompts, users
from promptrec.core.soft_versions import SoftVersion, soft_version
from promptrec.models.prompts.names import StrategyName

log = logging.getLogger("promptrec.cache")

DEFAULT_REFRESH_S = 5.0


def task_prompt_key(fingerprint: str, task: str) -> str:
    return f"prompt:task:{fingerprint}:{task}"


def user_prompt_key(fingerprint: str, task: str, user_id: str) -> str:
    return f"prompt:user:{fingerprint}:{task}:{user_id}"


def user_context_key(user_id: str) -> str:
    return f"user:context:{user_id}"


@dataclass(frozen=True)
class ServedPrompt:
    task_tokens: tuple[str, ...] = ()
    task_version: int = 0  # 0: no prompt set searched yet (the plain template)
    personal_tokens: tuple[str, ...] = ()
    version: int = 0  # 0: no personal prompt (the user gets the task-level prompt)
    metric_before: float | None = None
    metric_after: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    searched_at: str | None = None
    strategy: str = StrategyName.PAPREC  # the strategy of the user's version
    state: dict[str, Any] | None = None  # rpp: the slot choice; soft: what the vectors are
    soft: SoftVersion | None = None  # soft: the vectors the user's prompt is scored with

    @property
    def rpp_choice(self) -> dict[str, Any] | None:
        """The slot choice an rpp version is rendered from (None for other strategies)."""
        return self.state if self.strategy == StrategyName.RPP else None

    @property
    def personalized(self) -> bool:
        return bool(self.personal_tokens) or self.state is not None


async def _task_part(session: AsyncSession, task: str, fingerprint: str) -> dict[str, Any]:
    row = await prompts.current_prompt_set(session, task, fingerprint)
    if row is None:
        return {"tokens": [], "version": 0, "read_at": time.time()}
    return {"tokens": list(row.tokens), "version": row.version, "read_at": time.time()}


async def _user_part(
    session: AsyncSession, user_id: str, task: str, fingerprint: str
) -> dict[str, Any]:
    row = await prompts.current_user_prompt(session, user_id, task, fingerprint)
    if row is None:
        return {"tokens": [], "version": 0, "read_at": time.time()}
    return {
        "read_at": time.time(),
        "tokens": list(row.tokens),
        "version": row.version,
        "strategy": row.strategy,
        "state": row.state,
        "vectors": base64.b64encode(row.vectors).decode() if row.vectors is not None else None,
        "metric_before": row.metric_before,
        "metric_after": row.metric_after,
        "metrics": dict(row.metrics or {}),
        "searched_at": row.searched_at.isoformat() if row.searched_at else None,
    }


@dataclass(frozen=True)
class UserContext:
    """The user's profile and history (item ids, oldest first) as the database has them."""

    age: float | None
    gender: str | None
    occupation: str | None
    history: tuple[str, ...]


async def _context(session: AsyncSession, user_id: str) -> dict[str, Any]:
    """Records a user never seen before (committing it) and reads the context."""
    user, created = await users.ensure_user(session, user_id)
    if created:
        await session.commit()
    return {
        "age": user.age,
        "gender": user.gender,
        "occupation": user.occupation,
        "history": await interactions.user_history(session, user_id),
    }


def _fresh(part: dict[str, Any] | None, refresh_s: float) -> dict[str, Any] | None:
    """The cached part if it was read from the database less than `refresh_s` ago."""
    if part is None or time.time() - part.get("read_at", 0.0) >= refresh_s:
        return None
    return part


async def served_prompt(
    session: AsyncSession,
    cache: PromptCache,
    user_id: str,
    task: str,
    fingerprint: str,
    refresh_s: float = DEFAULT_REFRESH_S,
) -> ServedPrompt:
    keys = [task_prompt_key(fingerprint, task), user_prompt_key(fingerprint, task, user_id)]
    cached = await cache.get_many(keys)
    parts = [_fresh(p, refresh_s) for p in cached]
    await _fill_misses(session, cache, keys, parts, cached, user_id, task, fingerprint)
    task_part, user_part = parts
    assert task_part is not None and user_part is not None  # _fill_misses filled them or raised
    return _prompt(task_part, user_part)


async def recommendation_inputs(
    sessions: async_sessionmaker,
    cache: PromptCache,
    user_id: str,
    task: str,
    fingerprint: str,
    context_ttl_s: float,
    refresh_s: float = DEFAULT_REFRESH_S,
) -> tuple[ServedPrompt, UserContext]:
    """The prompt and the context, in one cache round trip; a user never seen is recorded.
    A database session is opened only on a cache miss (a hot user costs none, but for one
    read of its prompt parts every `refresh_s`)."""
    keys = [
        task_prompt_key(fingerprint, task),
        user_prompt_key(fingerprint, task, user_id),
        user_context_key(user_id),
    ]
    cached = await cache.get_many(keys)
    parts = [_fresh(cached[0], refresh_s), _fresh(cached[1], refresh_s), cached[2]]
    if None in parts:
        async with sessions() as session:
            if parts[2] is None:
                parts[2] = read = await _context(session, user_id)
                await cache.set(keys[2], read, ttl_s=context_ttl_s)
            await _fill_misses(session, cache, keys[:2], parts, cached, user_id, task, fingerprint)
    task_part, user_part, context = parts
    # Each part was cached, or read above; _fill_misses fills the prompt parts or raises.
    assert task_part is not None and user_part is not None and context is not None
    return _prompt(task_part, user_part), UserContext(
        context["age"], context["gender"], context["occupation"], tuple(context["history"])
    )


async def _fill_misses(
    session: AsyncSession,
    cache: PromptCache,
    keys: list[str],
    parts: list[dict[str, Any] | None],
    cached: list[dict[str, Any] | None],
    user_id: str,
    task: str,
    fingerprint: str,
) -> None:
    """Reads the missing prompt parts (parts[0]: task-level, parts[1]: personal) and caches
    them. With the database down, a cached part past its refresh age is served as it is."""
    try:
        if parts[0] is None:
            parts[0] = read = await _task_part(session, task, fingerprint)
            await cache.set(keys[0], read)
        if parts[1] is None:
            parts[1] = read = await _user_part(session, user_id, task, fingerprint)
            await cache.set(keys[1], read)
    except DATABASE_UNAVAILABLE:
        if any(parts[n] is None and cached[n] is None for n in (0, 1)):
            raise
        log.warning("database unavailable, serving a cached prompt", extra={"user": user_id})
        for n in (0, 1):
            parts[n] = parts[n] or cached[n]


def _prompt(task_part: dict[str, Any], user_part: dict[str, Any]) -> ServedPrompt:
    strategy = user_part.get("strategy") or StrategyName.PAPREC
    vectors = user_part.get("vectors")
    soft = (
        soft_version(user_part.get("state"), base64.b64decode(vectors))
        if strategy == StrategyName.SOFT and vectors is not None
        else None
    )
    return ServedPrompt(
        task_tokens=tuple(task_part["tokens"]),
        task_version=int(task_part["version"]),
        personal_tokens=tuple(user_part["tokens"]),
        version=int(user_part["version"]),
        metric_before=user_part.get("metric_before"),
        metric_after=user_part.get("metric_after"),
        metrics=user_part.get("metrics") or {},
        searched_at=user_part.get("searched_at"),
        strategy=strategy,
        state=user_part.get("state"),
        soft=soft,
    )


async def invalidate_user_prompt(
    cache: PromptCache, fingerprint: str, task: str, user_id: str
) -> None:
    await cache.delete(user_prompt_key(fingerprint, task, user_id))


async def invalidate_user_contexts(cache: PromptCache, user_ids: list[str]) -> None:
    if user_ids:
        await cache.delete(*[user_context_key(u) for u in user_ids])


async def invalidate_task_prompt(cache: PromptCache, fingerprint: str, task: str) -> None:
    await cache.delete(task_prompt_key(fingerprint, task))

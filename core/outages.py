"""Which errors mean a store is down or unreachable (worth a retry after a backoff)."""

from __future__ import annotations

import redis.exceptions

from promptrec.core.db.engine import DATABASE_UNAVAILABLE

# Not any database error: an IntegrityError or a bug would be retried forever as an "outage".
STORE_ERRORS: tuple[type[Exception], ...] = (
    *DATABASE_UNAVAILABLE,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

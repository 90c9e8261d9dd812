"""Who may call a route, checked before the body is read: admin key, client keys, rate limit.

The checks run in the route class, ahead of FastAPI's body parsing, so a caller without a key
learns 401 whatever it sent (a dependency would run after the body was parsed: no key plus bad
JSON answered 422). Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from pydantic import SecretStr

from promptrec.core.settings import Settings
from promptrec.service.api.schemas import Problem

CLIENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing X-API-Key (when client keys are configured)"},
    403: {"model": Problem, "description": "wrong API key"},
    429: {"model": Problem, "description": "rate limit of the key; retry after Retry-After"},
}

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _matches(given: str, expected: SecretStr) -> bool:
    return secrets.compare_digest(
        given.encode("utf-8", "surrogateescape"),
        expected.get_secret_value().encode("utf-8", "surrogateescape"),
    )


def _settings(request: Request) -> Settings:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is starting")
    return runtime.settings


def check_admin_key(settings: Settings, given: str | None) -> None:
    """401 without a key or when no admin key is configured, 403 with a wrong one."""
    challenge = {"WWW-Authenticate": "APIKey"}
    if settings.admin_api_key is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "admin routes are off: set PROMPTREC_ADMIN_API_KEY when the service starts",
            challenge,
        )
    if not given:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key", challenge)
    if not _matches(given, settings.admin_api_key):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong API key")


class TokenBuckets:
    """Per key: `rate` requests a second on average, bursts of up to `burst` (in-process)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[int, tuple[float, float]] = {}  # key index -> (tokens, at)

    def take(self, key: int) -> float:
        """0 when the request may go; else the seconds until a token is there."""
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


def check_client_key(request: Request, settings: Settings) -> None:
    keys = settings.client_api_keys
    if not keys:
        return
    given = request.headers.get("x-api-key")
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing X-API-Key", {"WWW-Authenticate": "APIKey"}
        )
    # Every key is compared, so the time taken says nothing about which one nearly matched.
    found = [n for n, key in enumerate(keys) if _matches(given, key)]
    if not found:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong API key")
    buckets = getattr(request.app.state, "client_buckets", None)
    if buckets is None:
        buckets = TokenBuckets(settings.client_rate_limit_per_s, settings.client_rate_burst)
        request.app.state.client_buckets = buckets
    wait = buckets.take(found[0])
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "rate limit of this API key exceeded; retry later",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )


class AdminRoute(APIRoute):
    """An admin route: the admin key is checked before anything else."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            check_admin_key(_settings(request), request.headers.get("x-api-key"))
            return await handler(request)

        return checked


class ClientRoute(APIRoute):
    """A client route: a client key (when configured) and its rate limit, before the body."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            check_client_key(request, _settings(request))
            return await handler(request)

        return checked

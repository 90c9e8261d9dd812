"""`Annotated` dependencies so handlers stay short: the runtime, a DB session, admin auth."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.runtime import Runtime


# Dependencies are `async def`: FastAPI runs a plain `def` one in a thread pool, a thread hop
# per request that cost more than the work.
async def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the service is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="admin API key")


async def require_admin(
    runtime: RuntimeDep, api_key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """401 without a key, 403 with a wrong one; compared in constant time, never logged."""
    if not api_key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing X-API-Key", {"WWW-Authenticate": "APIKey"}
        )
    expected = runtime.settings.admin_api_key
    if expected is None or not secrets.compare_digest(
        api_key.encode("utf-8", "surrogateescape"),
        expected.get_secret_value().encode("utf-8", "surrogateescape"),
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong API key")


AdminDep = Depends(require_admin)

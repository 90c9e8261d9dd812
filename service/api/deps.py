"""`Annotated` dependencies so handlers stay short: the runtime, a DB session, the key schemes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.service.api.access import check_admin_key
from promptrec.service.api.runtime import Runtime


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

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="AdminKey", description="admin API key"
)
client_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ClientKey",
    description="client API key (when PROMPTREC_CLIENT_API_KEYS is set)",
)


async def require_admin(
    runtime: RuntimeDep, api_key: Annotated[str | None, Security(api_key_header)]
) -> None:
    """401 without a key (or with none configured), 403 with a wrong one. `AdminRoute` has
    checked this before the body was read; as a dependency it also documents the scheme."""
    check_admin_key(runtime.settings, api_key)


async def document_client_key(_key: Annotated[str | None, Security(client_key_header)]) -> None:
    """Only shows the client key in the OpenAPI spec: `ClientRoute` checks it."""


AdminDep = Depends(require_admin)
ClientKeyDep = Depends(document_client_key)

"""Error answers: every fault a request can meet becomes a JSON answer the client can act on,
and none of them closes the connection (uvicorn closes a keep-alive connection whenever an
exception reaches it, even after a response was sent)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from promptrec.core.db.engine import DATABASE_UNAVAILABLE
from promptrec.core.settings import Settings
from promptrec.service.batching import DeadlineExceeded, Overloaded


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities as strings: Python's JSON reader accepts them, but a
    JSON answer may not contain them (echoing them back failed with a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    retry_after = {"Retry-After": str(settings.retry_after_s)}

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": json_safe(jsonable_encoder(error.errors()))}, 422)

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, _error: Overloaded) -> JSONResponse:
        return JSONResponse(
            {"detail": "too many requests queued; retry later"}, 429, headers=retry_after
        )

    @app.exception_handler(DeadlineExceeded)
    async def deadline(_request: Request, _error: DeadlineExceeded) -> JSONResponse:
        return JSONResponse({"detail": "the request's deadline passed"}, 503)

    async def database_down(_request: Request, _error: Exception) -> JSONResponse:
        # What a client can do about an outage: come back. Readiness says the same (503).
        return JSONResponse(
            {"detail": "the database is unavailable; retry later"}, 503, headers=retry_after
        )

    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, database_down)

"""`create_app()`: the gateway with its routers, middleware, error handlers and lifespan."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from models.rlm.model import RecLM
from service.api.middleware import RequestContextMiddleware
from service.api.routes import admin, events, health, prompts, recommendations
from service.api.runtime import start_runtime
from service.api.schemas import Problem
from service.batching import DeadlineExceeded, Overloaded
from service.observability import configure_logging
from service.settings import Settings, get_settings

log = logging.getLogger("promptrec.api")


def create_app(
    settings: Settings | None = None, lm: RecLM | None = None, *, freeze_gc: bool = False
) -> FastAPI:
    """The app; the model is loaded once at startup (or `lm` is used as given).

    `freeze_gc` (for a serving process): after startup, the half million objects that the
    imports and the model made are moved out of the garbage collector's sight. A full
    collection walked them all, stalling every request for ~300 ms every few seconds under load.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = await start_runtime(settings, lm)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            runtime, app.state.runtime = app.state.runtime, None
            await runtime.close()

    app = FastAPI(
        title="PromptRec",
        version="0.1.0",
        description="Personalized prompts for recommendation language models, as a service.",
        lifespan=lifespan,
        responses={
            400: {"model": Problem, "description": "a body that is not valid JSON"},
            413: {"model": Problem, "description": "request body too large"},
        },
    )
    app.state.runtime = None
    for module in (recommendations, events, prompts, admin, health):
        app.include_router(module.router)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, _error: Overloaded) -> JSONResponse:
        return JSONResponse(
            {"detail": "too many requests queued; retry later"},
            status_code=429,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    @app.exception_handler(DeadlineExceeded)
    async def deadline(_request: Request, _error: DeadlineExceeded) -> JSONResponse:
        return JSONResponse({"detail": "the request's deadline passed"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=error)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app

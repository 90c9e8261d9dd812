"""`create_app()`: the gateway with its routers, middleware, error handlers and lifespan."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from promptrec.core.observability import configure_logging
from promptrec.core.settings import Settings, get_settings
from promptrec.models.rlm.model import RecLM
from promptrec.service.api.deps import ClientKeyDep
from promptrec.service.api.errors import install_error_handlers
from promptrec.service.api.middleware import RequestContextMiddleware
from promptrec.service.api.routes import admin, events, health, prompts, recommendations
from promptrec.service.api.runtime import BackgroundFactory, start_runtime
from promptrec.service.api.schemas import Problem

log = logging.getLogger("promptrec.api")


def create_app(
    settings: Settings | None = None,
    lm: RecLM | None = None,
    *,
    freeze_gc: bool = False,
    background: BackgroundFactory | None = None,
) -> FastAPI:
    """The app; the model is loaded once at startup (or `lm` is used as given). `background`
    makes what the process runs beside the API from its runtime (cli.gateway's embedded worker).

    `freeze_gc` (for a serving process): after startup, the half million objects that the
    imports and the model made are moved out of the garbage collector's sight. A full
    collection walked them all, stalling every request for ~300 ms every few seconds under load.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.runtime = await start_runtime(settings, lm, background)
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
            503: {"model": Problem, "description": "database unavailable; retry after Retry-After"},
        },
    )
    app.state.runtime = None
    # The client key scheme is in the spec only when keys are configured (else they are open).
    client = [ClientKeyDep] if settings.client_api_keys else []
    for module in (recommendations, events, prompts):
        app.include_router(module.router, dependencies=client)
    for module in (admin, health):
        app.include_router(module.router)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)

    install_error_handlers(app, settings)
    return app

"""The gateway as `promptrec serve` runs it: the HTTP app, with the embedded worker wired in
when the settings ask for one."""

from __future__ import annotations

from fastapi import FastAPI

from promptrec.core.settings import Settings, get_settings
from promptrec.models.rlm.model import RecLM
from promptrec.service.api.app import create_app
from promptrec.service.api.runtime import Runtime
from promptrec.worker.runner import Worker


def embedded_worker(runtime: Runtime) -> Worker:
    """The API process searches too: from the in-process queue, or as one more consumer of the
    Redis stream (deployments with `promptrec worker` processes turn it off)."""
    return Worker(
        runtime.settings,
        runtime.sessions,
        runtime.queue,
        runtime.cache,
        runtime.lm,
        runtime.catalog,
        runtime.fingerprint,
        runtime.soft,
    )


def gateway_app(
    settings: Settings | None = None, lm: RecLM | None = None, *, freeze_gc: bool = False
) -> FastAPI:
    settings = settings or get_settings()
    background = embedded_worker if settings.embedded_worker else None
    return create_app(settings, lm, freeze_gc=freeze_gc, background=background)

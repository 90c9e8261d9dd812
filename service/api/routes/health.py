"""Liveness, readiness (model, database, cache) and Prometheus metrics; no auth."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from promptrec.models.prompts.names import StrategyName
from promptrec.service.api.schemas import HealthView

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=HealthView)
async def live() -> HealthView:
    return HealthView(status="ok")


@router.get(
    "/health/ready",
    response_model=HealthView,
    responses={
        503: {
            "model": HealthView,
            "description": "model or database not available (strategy soft: or no composer)",
        }
    },
)
async def ready(request: Request) -> JSONResponse:
    """ok: all up; degraded: Redis down (answers come from the database); unavailable: 503.
    With the soft strategy active, a missing or unusable composer is unavailable too (the check
    says why): no new or drifting user could ever be searched."""
    runtime = getattr(request.app.state, "runtime", None)
    checks = {"model": "down", "database": "down", "cache": "down"}
    if runtime is not None:
        if runtime.settings.strategy == StrategyName.SOFT:
            checks["soft_composer"] = (
                "ok" if runtime.soft is not None else str(runtime.soft_problem)
            )
        checks["model"] = "ok" if runtime.batcher.running else "down"
        try:
            async with runtime.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception:  # any failure to reach the database means not ready
            checks["database"] = "down"
        checks["cache"] = "ok" if await runtime.cache.ping() else "down"
    if any(checks[c] != "ok" for c in checks if c != "cache"):
        view, code = HealthView(status="unavailable", checks=checks), 503
    elif checks["cache"] != "ok":
        view, code = HealthView(status="degraded", checks=checks), 200
    else:
        view, code = HealthView(status="ok", checks=checks), 200
    return JSONResponse(view.model_dump(), status_code=code)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

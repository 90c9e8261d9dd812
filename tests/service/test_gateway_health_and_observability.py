"""Health, readiness with Redis down, metrics, request ids, JSON logs, body limit, 429/503."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from promptrec.cli.gateway import gateway_app
from promptrec.core.observability import JsonFormatter
from promptrec.service.batching import DeadlineExceeded, Overloaded
from tests.support.settings import ADMIN_KEY, admin_headers, service_settings


def test_live_and_ready(service):
    assert service.client.get("/health/live").json() == {"status": "ok", "checks": {}}
    ready = service.client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"model": "ok", "database": "ok", "cache": "ok"},
    }


def test_redis_down_degrades_but_still_serves_from_the_database(lm, embedded_url):
    settings = service_settings(embedded_url, redis_url="redis://127.0.0.1:1/0")
    with TestClient(gateway_app(settings, lm=lm)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["cache"] == "down"
        response = client.post("/v1/users/u1/recommendations", json={"count": 3})
        assert response.status_code == 200
        view = client.get("/v1/users/u1/prompt", params={"task": "sequential"})
        assert view.status_code == 200


def test_metrics_expose_latency_batching_cache_and_errors(service):
    service.client.post("/v1/users/u1/recommendations", json={"count": 2})
    service.client.post("/v1/users/u1/recommendations", json={"count": 0})
    text = service.client.get("/metrics").text
    for name in (
        "promptrec_http_request_duration_seconds_bucket",
        "promptrec_inference_batch_size_bucket",
        "promptrec_inference_queue_seconds_bucket",
        "promptrec_inference_compute_seconds_bucket",
        "promptrec_cache_lookups_total",
        'promptrec_http_errors_total{status_class="4xx"}',
    ):
        assert name in text, name


def test_request_id_is_echoed_or_made(service):
    given = service.client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = service.client.get("/health/live", headers={"X-Request-ID": "bad id\n"})
    assert len(made.headers["x-request-id"]) == 32


def test_logs_are_json_with_the_request_id_and_never_the_key(service):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("promptrec")
    logger.addHandler(handler)
    try:
        service.client.post(
            "/v1/admin/prompt-search-jobs",
            json={"scope": "all"},
            headers={**admin_headers(), "X-Request-ID": "req-42"},
        )
        service.client.post(
            "/v1/admin/prompt-search-jobs", json={"scope": "all"}, headers={"X-API-Key": "guess"}
        )
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "promptrec.access"]
    assert access[0]["request_id"] == "req-42" and access[0]["status"] == 202
    assert ADMIN_KEY not in stream.getvalue() and "guess" not in stream.getvalue()


def test_oversized_bodies_are_413(service):
    limit = service.settings.max_body_bytes
    response = service.client.post(
        "/v1/events", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(("error", "status"), [(Overloaded(), 429), (DeadlineExceeded(), 503)])
def test_a_full_queue_is_429_with_retry_after_and_a_missed_deadline_503(
    service, monkeypatch, error, status
):
    async def refuse(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(service.runtime.batcher, "submit", refuse)
    response = service.client.post("/v1/users/u1/recommendations", json={"count": 2})
    assert response.status_code == status
    if status == 429:
        assert int(response.headers["retry-after"]) >= 1


def test_ready_is_503_when_the_database_is_unreachable(lm, embedded_url, monkeypatch):
    from promptrec.core.db.engine import make_async_engine

    with TestClient(gateway_app(service_settings(embedded_url), lm=lm)) as client:
        runtime = client.app.state.runtime
        unreachable = make_async_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
        monkeypatch.setattr(runtime, "engine", unreachable)
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"] == "down"
        client.portal.call(unreachable.dispose)


def test_concurrent_requests_are_ranked_in_shared_batches(lm, embedded_url):
    from concurrent.futures import ThreadPoolExecutor

    from promptrec.core.observability import BATCH_SIZE

    def batches():
        samples = {s.name: s.value for s in BATCH_SIZE.collect()[0].samples}
        return samples["promptrec_inference_batch_size_sum"], samples[
            "promptrec_inference_batch_size_count"
        ]

    settings = service_settings(embedded_url, max_wait_ms=100.0, max_batch_size=8)
    with TestClient(gateway_app(settings, lm=lm)) as client:
        client.post("/v1/users/u1/recommendations", json={"count": 1})  # warm up
        requests_before, calls_before = batches()

        def recommend(n):
            response = client.post(f"/v1/users/u{n}/recommendations", json={"count": 3})
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(recommend, range(16))) == {200}
        requests_after, calls_after = batches()
    assert requests_after - requests_before == 16
    assert calls_after - calls_before < 16  # some requests shared a model call

"""Faults a client can cause, answered cleanly: non-finite numbers, auth before validation,
idempotent admin jobs, rollback without personal tokens, client keys and their rate limit, and
a lost cache invalidation that heals in seconds."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from promptrec.cli.gateway import gateway_app
from tests.support.gateway_app import new_user_id, run_async, write_user_prompt
from tests.support.settings import admin_headers, service_settings

BODY_ROUTES = [
    ("/v1/users/u1/recommendations", '{"count": %s}'),
    (
        "/v1/events",
        '{"events": [{"event_id": "e", "user_id": "u1", "item_id": "m1", "timestamp": %s}]}',
    ),
    ("/v1/admin/prompt-search-jobs", '{"task": "sequential", "user_ids": ["u1"], "x": %s}'),
]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "[1, NaN]"])
@pytest.mark.parametrize(("url", "template"), BODY_ROUTES)
def test_non_finite_numbers_are_a_422_with_a_message(service, url, template, value):
    response = service.client.post(
        url,
        content=(template % value).encode(),
        headers={"content-type": "application/json", **admin_headers()},
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all("msg" in error for error in detail)


def test_without_an_admin_key_configured_every_key_is_401(lm, embedded_url):
    settings = service_settings(embedded_url, admin_api_key=None)
    with TestClient(gateway_app(settings, lm=lm)) as client:
        response = client.post(
            "/v1/admin/prompt-search-jobs",
            json={"scope": "all"},
            headers={"X-API-Key": "anything"},
        )
    assert response.status_code == 401
    assert "PROMPTREC_ADMIN_API_KEY" in response.json()["detail"]


@pytest.mark.parametrize("body", [b"{not json", b'{"count": NaN}', b'{"scope": 5}'])
def test_auth_is_checked_before_the_body_is_read(service, body):
    headers = {"content-type": "application/json"}
    url = "/v1/admin/prompt-search-jobs"
    assert service.client.post(url, content=body, headers=headers).status_code == 401
    wrong = service.client.post(url, content=body, headers={**headers, "X-API-Key": "wrong"})
    assert wrong.status_code == 403


def test_a_job_counts_distinct_users(service):
    response = service.client.post(
        "/v1/admin/prompt-search-jobs",
        json={"task": "sequential", "user_ids": ["u1", "u1", "u1"]},
        headers=admin_headers(),
    )
    assert response.status_code == 202
    assert response.json()["user_count"] == 1


def test_a_job_posted_twice_with_one_idempotency_key_is_created_once(service):
    key = new_user_id()
    body = {"task": "sequential", "user_ids": ["u1", "u2"]}
    headers = {**admin_headers(), "Idempotency-Key": key}
    first = service.client.post("/v1/admin/prompt-search-jobs", json=body, headers=headers)
    again = service.client.post("/v1/admin/prompt-search-jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    # The users were queued once: the queue holds one entry per (job, user).
    queued = run_async(service, service.runtime.queue.queued)
    assert {k for k in queued if k[0] == first.json()["job_id"]} == {
        (first.json()["job_id"], "u1"),
        (first.json()["job_id"], "u2"),
    }
    other = service.client.post(
        "/v1/admin/prompt-search-jobs",
        json={"task": "sequential", "user_ids": ["u3"]},
        headers=headers,
    )
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    fresh = service.client.post("/v1/admin/prompt-search-jobs", json=body, headers=admin_headers())
    assert fresh.json()["job_id"] != first.json()["job_id"]


def test_rollback_of_a_user_without_personal_tokens_is_409(service):
    user = new_user_id()
    service.client.post(f"/v1/users/{user}/recommendations", json={"count": 1})
    # A search that kept the task-level prompt writes a version with no tokens.
    run_async(service, write_user_prompt, service.runtime, user, "sequential", [])
    response = service.client.post(
        f"/v1/admin/users/{user}/prompt/rollback",
        params={"task": "sequential"},
        headers=admin_headers(),
    )
    assert response.status_code == 409, response.text


async def _commit_without_invalidating(runtime, user_id: str, tokens: list[str]) -> int:
    """A worker that committed a version and lost its cache invalidation (killed, or Redis
    writes paused at that moment)."""
    from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt

    async with runtime.sessions() as session:
        row = await add_user_prompt(
            session, SearchedPrompt(user_id, "sequential", runtime.fingerprint, tokens)
        )
        await session.commit()
    return row.version


def test_a_lost_invalidation_serves_the_new_prompt_within_seconds(service):
    user = new_user_id()
    client = service.client
    client.post(f"/v1/users/{user}/recommendations", json={"count": 1})  # records the user
    run_async(service, write_user_prompt, service.runtime, user, "sequential", ["comedy"])
    first = client.post(f"/v1/users/{user}/recommendations", json={"count": 1}).json()
    assert first["prompt"]["personalized"]  # now cached
    version = run_async(service, _commit_without_invalidating, service.runtime, user, ["war"])
    committed = time.monotonic()
    while True:
        served = client.post(f"/v1/users/{user}/recommendations", json={"count": 1}).json()
        if served["prompt"]["version"] == version:
            break
        assert time.monotonic() - committed < 10, "the stale prompt outlived 10 s"
        time.sleep(0.25)
    view = client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"}).json()
    assert view["personal_tokens"] == ["war"]


CLIENT_KEY = "client-key-0123456789"


def test_client_keys_are_required_when_configured_and_rate_limited(lm, embedded_url):
    settings = service_settings(
        embedded_url,
        client_api_keys=[CLIENT_KEY, "other-client-key-0123"],
        client_rate_limit_per_s=1.0,
        client_rate_burst=3,
    )
    url = "/v1/users/u1/recommendations"
    with TestClient(gateway_app(settings, lm=lm)) as client:
        assert client.post(url, json={"count": 1}).status_code == 401
        assert client.post(url, json={"count": 1}, headers={"X-API-Key": "x"}).status_code == 403
        headers = {"X-API-Key": CLIENT_KEY}
        codes = [client.post(url, json={"count": 1}, headers=headers).status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
        limited = client.post("/v1/events", json={"events": []}, headers=headers)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Each key has its own budget; health and the admin key are not limited.
        other = client.post(url, json={"count": 1}, headers={"X-API-Key": "other-client-key-0123"})
        assert other.status_code == 200
        assert client.get("/health/live").status_code == 200
        admin = client.get("/v1/admin/prompt-search-jobs/" + "0" * 32, headers=admin_headers())
        assert admin.status_code == 404


def test_client_keys_are_off_by_default(service):
    assert not service.settings.client_api_keys
    assert service.client.post("/v1/users/u1/recommendations", json={"count": 1}).status_code == 200

"""GET prompt, admin auth, prompt-search jobs and rollback."""

from __future__ import annotations

from tests.support.gateway_app import new_user_id, run_async, write_user_prompt
from tests.support.settings import admin_headers


def test_prompt_of_an_unknown_user_is_404_and_a_plain_user_gets_the_task_prompt(service):
    assert service.client.get("/v1/users/nobody-here/prompt?task=sequential").status_code == 404
    view = service.client.get("/v1/users/u4/prompt", params={"task": "sequential"}).json()
    assert view["version"] == 0 and view["personal_tokens"] == []
    assert view["model"] == service.runtime.fingerprint
    assert service.client.get("/v1/users/u4/prompt", params={"task": "x"}).status_code == 422
    assert service.client.get("/v1/users/u4/prompt").status_code == 422


def test_prompt_shows_tokens_version_metrics_and_search_time(service):
    user = new_user_id()
    service.client.post(f"/v1/users/{user}/recommendations", json={"count": 1})
    version = run_async(service, write_user_prompt, service.runtime, user, "sequential", ["comedy"])
    view = service.client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"}).json()
    assert view["personal_tokens"] == ["comedy"] and view["personalized"]
    assert view["version"] == version
    assert (view["metric_before"], view["metric_after"]) == (0.25, 0.5)
    assert view["metrics"] == {"ndcg@10": 0.5}
    assert view["searched_at"]


def test_admin_routes_need_the_right_key(service):
    url = "/v1/admin/prompt-search-jobs"
    body = {"task": "sequential", "scope": "all"}
    missing = service.client.post(url, json=body)
    assert missing.status_code == 401
    wrong = service.client.post(url, json=body, headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 403
    non_ascii = service.client.post(url, json=body, headers={"X-API-Key": b"cl\xe9"})
    assert non_ascii.status_code == 403
    assert service.client.post(url, json=body, headers=admin_headers()).status_code == 202


def test_jobs_for_users_are_queued_with_per_user_rows(service):
    response = service.client.post(
        "/v1/admin/prompt-search-jobs",
        json={"task": "sequential", "user_ids": ["u1", "u2", "u1"]},
        headers=admin_headers(),
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and created["scope"] == "users"
    job = service.client.get(
        f"/v1/admin/prompt-search-jobs/{created['job_id']}", headers=admin_headers()
    ).json()
    assert [u["user_id"] for u in job["users"]] == ["u1", "u2"]
    assert job["counts"] == {"queued": 2}
    assert all(u["status"] == "queued" and u["outcome"] is None for u in job["users"])


def test_job_scopes_select_new_and_drifting_users(service):
    user = new_user_id()
    events = [
        {"event_id": f"{user}-{n}", "user_id": user, "item_id": f"m{n}", "timestamp": 1_700_000_000}
        for n in range(3)
    ]
    service.client.post("/v1/events", json={"events": events})

    def scope_users(scope):
        created = service.client.post(
            "/v1/admin/prompt-search-jobs",
            json={"task": "direct", "scope": scope},
            headers=admin_headers(),
        ).json()
        job = service.client.get(
            f"/v1/admin/prompt-search-jobs/{created['job_id']}", headers=admin_headers()
        ).json()
        return {u["user_id"] for u in job["users"]}

    assert user in scope_users("new")  # 3 events >= new_user_events, no prompt yet
    run_async(service, write_user_prompt, service.runtime, user, "direct", ["drama"])
    assert user not in scope_users("new")
    assert user not in scope_users("drifting")  # the search reset its counter
    more = [{**e, "event_id": e["event_id"] + "-later"} for e in events[:2]]
    service.client.post("/v1/events", json={"events": more})
    assert user in scope_users("drifting")  # 2 events since the search >= drift_events


def test_job_input_errors(service):
    url = "/v1/admin/prompt-search-jobs"
    for body in (
        {"task": "sequential"},
        {"task": "sequential", "scope": "all", "user_ids": ["u1"]},
        {"task": "sequential", "user_ids": ["u1", "never-seen-user"]},
        {"task": "sequential", "scope": "everyone"},
    ):
        response = service.client.post(url, json=body, headers=admin_headers())
        assert response.status_code == 422, (body, response.text)
    missing = service.client.get(f"{url}/{'0' * 32}", headers=admin_headers())
    assert missing.status_code == 404
    assert service.client.get(f"{url}/not-a-job", headers=admin_headers()).status_code == 422


def test_rollback_serves_the_previous_version(service):
    user = new_user_id()
    service.client.post(f"/v1/users/{user}/recommendations", json={"count": 1})
    url = f"/v1/admin/users/{user}/prompt/rollback?task=sequential"
    assert service.client.post(url, headers=admin_headers()).status_code == 409
    first = run_async(service, write_user_prompt, service.runtime, user, "sequential", ["comedy"])
    second = run_async(service, write_user_prompt, service.runtime, user, "sequential", ["drama"])
    assert second == first + 1
    # Cached now, so the rollback has to invalidate it.
    recommended = service.client.post(f"/v1/users/{user}/recommendations", json={"count": 1})
    assert recommended.json()["prompt"]["version"] == second
    view = service.client.post(url, headers=admin_headers()).json()
    assert (view["version"], view["personal_tokens"]) == (first, ["comedy"])
    recommended = service.client.post(f"/v1/users/{user}/recommendations", json={"count": 1})
    assert recommended.json()["prompt"]["version"] == first
    view = service.client.post(url, headers=admin_headers()).json()
    assert (view["version"], view["personalized"]) == (0, False)
    assert service.client.post(url, headers=admin_headers()).status_code == 409
    unknown = "/v1/admin/users/nobody-here/prompt/rollback?task=sequential"
    assert service.client.post(unknown, headers=admin_headers()).status_code == 404

"""POST /v1/users/{id}/recommendations: counts, exclusions, candidates, prompts, properties."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway_app import new_user_id, run_async, write_task_prompt, write_user_prompt


def _recommend(service, user_id, **body):
    return service.client.post(f"/v1/users/{user_id}/recommendations", json=body)


def _history(data, user_id):
    frame = data.interactions[data.interactions["user"] == user_id]
    return list(frame.sort_values("timestamp", kind="stable")["item"])


def test_seen_items_are_excluded_by_default_and_kept_when_asked(service, data):
    seen = set(_history(data, "u3"))
    n_items = service.runtime.lm.n_items
    body = _recommend(service, "u3", count=n_items).json()
    assert len(body["items"]) == n_items - len(seen)
    assert not {i["item_id"] for i in body["items"]} & seen
    body = _recommend(service, "u3", count=n_items, exclude_seen=False).json()
    assert {i["item_id"] for i in body["items"]} >= seen


def test_items_carry_titles_from_the_database(service, data):
    titles = dict(zip(data.items["item"], data.items["title"], strict=True))
    body = _recommend(service, "u2", count=3).json()
    assert all(i["title"] == titles[i["item_id"]] for i in body["items"])


def test_an_unseen_user_is_recorded_and_gets_the_task_level_prompt(service):
    user = new_user_id()
    response = _recommend(service, user, count=4)
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == {"version": 0, "task_version": 0, "personalized": False}
    prompt = service.client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"})
    assert prompt.status_code == 200
    assert prompt.json()["personalized"] is False


def test_history_overrides_the_stored_history(service, data):
    history = ["m1", "m2", "m3"]
    body = _recommend(service, "u5", count=60, history=history).json()
    returned = {i["item_id"] for i in body["items"]}
    assert not returned & set(history)
    assert returned & set(_history(data, "u5"))  # stored history is not excluded now


def test_candidates_restrict_the_ranking(service):
    candidates = ["m10", "m11", "m12", "m13"]
    body = _recommend(service, "u1", count=10, candidates=candidates, exclude_seen=False).json()
    assert sorted(i["item_id"] for i in body["items"]) == sorted(candidates)
    body = _recommend(service, "u1", task="direct", count=2, candidates=candidates).json()
    assert len(body["items"]) <= 2
    assert {i["item_id"] for i in body["items"]} <= set(candidates)


def test_unknown_items_and_a_direct_task_without_candidates_are_422(service):
    for body in (
        {"candidates": ["m1", "no-such-item"]},
        {"history": ["no-such-item"]},
        {"task": "direct"},
        {"count": 0},
        {"count": 10_000},
        {"task": "explain"},
        {"unexpected": 1},
        {"count": "5"},
        {"count": 5.0},
        {"exclude_seen": 0.0},
        {"exclude_seen": "yes"},
    ):
        response = _recommend(service, "u1", **body)
        assert response.status_code == 422, (body, response.text)
        assert "detail" in response.json()
    assert service.client.post("/v1/users/u1/recommendations", content=b"{").status_code == 422


def test_a_new_prompt_version_is_served_at_once(service):
    user = new_user_id()
    assert _recommend(service, user, count=3).json()["prompt"]["version"] == 0  # now cached
    version = run_async(service, write_user_prompt, service.runtime, user, "sequential", ["drama"])
    prompt = _recommend(service, user, count=3).json()["prompt"]
    assert prompt == {"version": version, "task_version": 0, "personalized": True}


def test_task_prompt_tokens_reach_every_user(service):
    version = run_async(service, write_task_prompt, service.runtime, "direct", ["pick", "best"])
    body = _recommend(service, "u9", task="direct", count=2, candidates=["m1", "m2", "m3"]).json()
    assert body["prompt"]["task_version"] == version
    view = service.client.get("/v1/users/u9/prompt", params={"task": "direct"}).json()
    assert view["task_tokens"] == ["pick", "best"]
    assert view["text"] == "pick best"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    user=st.integers(0, 79).map(lambda u: f"u{u}"),
    count=st.integers(1, 60),
    exclude_seen=st.booleans(),
    history_items=st.none() | st.lists(st.integers(0, 59).map(lambda i: f"m{i}"), max_size=12),
)
def test_ranking_properties(service, data, user, count, exclude_seen, history_items):
    """Exactly `count` unique items (when that many are allowed), scores sorted descending,
    seen items never returned when excluded."""
    body = {"count": count, "exclude_seen": exclude_seen}
    if history_items is not None:
        body["history"] = history_items
    response = _recommend(service, user, **body)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    seen = set(history_items if history_items is not None else _history(data, user))
    available = service.runtime.lm.n_items - (len(seen) if exclude_seen else 0)
    ids = [i["item_id"] for i in items]
    assert len(ids) == min(count, available)
    assert len(set(ids)) == len(ids)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    if exclude_seen:
        assert not set(ids) & seen

"""POST /v1/events: idempotent by event id, judged per event, feeding history and counters."""

from __future__ import annotations

import uuid

from tests.support.gateway_app import new_user_id, run_async


def _event(user_id, item_id, timestamp=1_700_000_000, **extra):
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "user_id": user_id,
        "item_id": item_id,
        "timestamp": timestamp,
        **extra,
    }


def _user(service, user_id):
    from promptrec.core.repositories.users import get_user

    async def read():
        async with service.runtime.sessions() as session:
            return await get_user(session, user_id)

    return run_async(service, read)


def test_accepted_events_extend_history_and_counters(service):
    user = new_user_id()
    events = [_event(user, "m4", 1_700_000_000), _event(user, "m7", "2023-11-15T00:00:00Z")]
    response = service.client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, 0)
    row = _user(service, user)
    assert (row.event_count, row.events_since_search) == (2, 2)
    items = service.client.post(f"/v1/users/{user}/recommendations", json={"count": 60}).json()
    assert not {i["item_id"] for i in items["items"]} & {"m4", "m7"}
    assert len(items["items"]) == service.runtime.lm.n_items - 2


def test_a_served_users_next_recommendation_sees_their_new_events(service):
    """The first recommendation caches the user's context; accepted events must invalidate it."""
    user = new_user_id()
    n_items = service.runtime.lm.n_items

    def recommended():
        response = service.client.post(f"/v1/users/{user}/recommendations", json={"count": 60})
        assert response.status_code == 200, response.text
        return [i["item_id"] for i in response.json()["items"]]

    top = recommended()
    assert len(top) == min(60, n_items)  # nothing seen yet
    assert (
        service.client.post("/v1/events", json={"events": [_event(user, top[0])]}).json()[
            "accepted"
        ]
        == 1
    )
    after = recommended()
    assert top[0] not in after
    assert len(after) == min(60, n_items - 1)


def test_resending_an_event_is_a_duplicate_not_a_second_interaction(service):
    user = new_user_id()
    event = _event(user, "m1", recommendation_id="r" * 128)  # the longest id the API takes
    first = service.client.post("/v1/events", json={"events": [event, event]}).json()
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate"]
    again = service.client.post("/v1/events", json={"events": [event]}).json()
    assert again["results"] == [
        {"event_id": event["event_id"], "status": "duplicate", "reason": None}
    ]
    assert _user(service, user).event_count == 1


def test_unknown_items_and_bad_times_are_rejected_per_event(service):
    user = new_user_id()
    events = [
        _event(user, "no-such-item"),
        _event(user, "m2", "2999-01-01T00:00:00Z"),
        _event(user, "m2", "1960-01-01T00:00:00+01:00"),
        _event(user, "m3"),
    ]
    body = service.client.post("/v1/events", json={"events": events}).json()
    assert [r["status"] for r in body["results"]] == ["rejected"] * 3 + ["accepted"]
    assert body["results"][0]["reason"] == "unknown item"
    assert body["results"][1]["reason"].startswith("bad time")
    assert _user(service, user).event_count == 1


def test_malformed_batches_are_422(service):
    for payload in (
        {"events": []},
        {"events": [{"event_id": "x"}]},
        {"events": [_event("u1", "m1", timestamp="yesterday")]},
        {"events": [_event("u1", "m1", timestamp="2024-01-01T00:00:00")]},  # no zone
        {"events": [_event("u1", "m1", timestamp="2024-02-30T00:00:00Z")]},
        {"events": [_event("u1", "m1", timestamp=1.5)]},
        {"events": [_event("u1", "m1", timestamp=True)]},
        {"events": [_event("bad id with spaces", "m1")]},
        [_event("u1", "m1")],
    ):
        response = service.client.post("/v1/events", json=payload)
        assert response.status_code == 422, (payload, response.text)

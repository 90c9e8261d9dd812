"""RPP versions in the gateway: a user's version of strategy rpp is served as its slot choice
says (template, history window, stated fields), shown with its sentences, searched by an admin
job with `strategy: rpp`, and rolled back like a PAP-REC version."""

from __future__ import annotations

from fastapi.testclient import TestClient

from promptrec.cli.gateway import gateway_app
from promptrec.models.prompts.rpp.slots import choice_from_names, choice_text, render_choice
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import profile_words
from promptrec.service.inference import Ranker, RankRequest
from tests.support.databases import prepared_database
from tests.support.gateway_app import (
    finished_admin_job,
    new_user_id,
    run_async,
    write_user_prompt,
)
from tests.support.settings import admin_headers, service_settings

CHOICE = {"template": "seq-3", "window": "5", "fields": "none"}
HISTORY = [f"m{i}" for i in range(0, 60, 6)]  # ten items, oldest first


async def write_rpp_version(runtime, user_id: str, choice: dict[str, str]) -> int:
    """What the worker writes for an RPP search, then the cache invalidation."""
    from promptrec.core.cached_reads import invalidate_user_prompt
    from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt

    async with runtime.sessions() as session:
        row = await add_user_prompt(
            session,
            SearchedPrompt(
                user_id,
                "sequential",
                runtime.fingerprint,
                [],
                0.2,
                0.3,
                strategy="rpp",
                state=choice,
            ),
        )
        await session.commit()
    await invalidate_user_prompt(runtime.cache, runtime.fingerprint, "sequential", user_id)
    return row.version


def _ranked(lm, catalog, tokens: list[str], history: list[int]) -> list[str]:
    request = RankRequest(tokens=tokens, count=10, exclude=tuple(history))
    return [catalog.item_ids[i] for i in Ranker(lm).rank([request])[0].items]


def test_an_rpp_version_is_served_as_its_choice_says(service):
    user = new_user_id()
    body = {"count": 10, "history": HISTORY}
    before = service.client.post(f"/v1/users/{user}/recommendations", json=body).json()
    version = run_async(service, write_rpp_version, service.runtime, user, CHOICE)
    view = service.client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"}).json()
    assert (view["strategy"], view["version"], view["personalized"]) == ("rpp", version, True)
    assert view["choice"] == CHOICE
    assert view["choice_text"] == view["text"] == choice_text(choice_from_names(CHOICE))
    assert "{history: last 5}" in view["text"] and "{profile}" not in view["text"]
    assert view["task_tokens"] == [] and view["personal_tokens"] == []
    after = service.client.post(f"/v1/users/{user}/recommendations", json=body).json()
    assert after["prompt"] == {"version": version, "task_version": 0, "personalized": True}
    # The ranking is the one of the choice's prompt: its template, the last 5 items, no fields.
    lm, catalog = service.runtime.lm, service.runtime.catalog
    history = [catalog.index_of[i] for i in HISTORY]
    fields = PromptFields(history, profile_words(None, None, None), catalog.taste_words(history))
    tokens = render_choice(choice_from_names(CHOICE), fields, lm.max_history)
    assert sum(t.startswith("item_") for t in tokens) == 5
    assert [i["item_id"] for i in after["items"]] == _ranked(lm, catalog, tokens, history)
    assert before["prompt"]["personalized"] is False


def test_a_job_with_an_unknown_strategy_is_a_422(service):
    url = "/v1/admin/prompt-search-jobs"
    unknown = service.client.post(
        url, json={"user_ids": ["u1"], "strategy": "magic"}, headers=admin_headers()
    )
    assert unknown.status_code == 422 and "unknown prompt strategy 'magic'" in unknown.text
    direct = {"task": "direct", "user_ids": ["u1"], "strategy": "rpp"}
    assert service.client.post(url, json=direct, headers=admin_headers()).status_code == 422
    default = service.client.post(url, json={"user_ids": ["u1"]}, headers=admin_headers())
    assert default.json()["strategy"] == "paprec"  # the active strategy (PROMPTREC_STRATEGY)


def test_an_admin_rpp_job_writes_an_rpp_version_and_rollback_restores_the_previous(
    tmp_path, lm, dataset_dir
):
    url = prepared_database(f"sqlite:///{tmp_path / 'rpp.db'}", dataset_dir)
    settings = service_settings(
        url,
        embedded_worker=True,
        new_user_events=10_000,  # only the admin job searches
        drift_events=10_000,
        rpp_choices_path=tmp_path / "none.json",  # no policy for the tiny model
    )
    with TestClient(gateway_app(settings, lm=lm)) as client:
        runtime = client.app.state.runtime
        portal_call = client.portal.call
        first = portal_call(write_user_prompt, runtime, "u5", "sequential", ["comedy"])
        body = {"user_ids": ["u5"], "strategy": "rpp"}
        created, job = finished_admin_job(client, body, 120)
        assert created["strategy"] == "rpp"
        assert job["strategy"] == "rpp" and job["users"][0]["outcome"] == "personalized"
        view = client.get("/v1/users/u5/prompt", params={"task": "sequential"}).json()
        assert (view["strategy"], view["version"]) == ("rpp", first + 1)
        assert set(view["choice"]) == {"template", "window", "fields"}
        assert view["metrics"]["choice"] == "/".join(view["choice"].values())
        rollback = "/v1/admin/users/u5/prompt/rollback?task=sequential"
        back = client.post(rollback, headers=admin_headers()).json()
        assert (back["strategy"], back["version"], back["personal_tokens"]) == (
            "paprec",
            first,
            ["comedy"],
        )
        assert back["choice"] is None

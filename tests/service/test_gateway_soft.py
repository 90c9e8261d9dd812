"""Soft versions in the gateway: a user's version of strategy soft is scored with its vectors
(the model side's scores exactly, one batched call beside plain rows), shown with its
components and fit but never its vectors, searched by an admin job with `strategy: soft`
(refused without a composer), loaded from a soft set file, and rolled back like any version;
a soft deployment without a usable composer is not ready and says why."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.cli.gateway import gateway_app
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import UserPrompt as PromptRow
from promptrec.core.soft_composer import weights_fingerprint
from promptrec.core.soft_versions import soft_state
from promptrec.models.prompts.rendering import UserPrompt
from promptrec.models.prompts.soft.composer import SoftComposer
from promptrec.models.prompts.soft.fitting import FitOutcome
from promptrec.models.prompts.soft.state import SoftPromptSet, SoftState, vectors_to_bytes
from promptrec.models.templates import TEMPLATES
from promptrec.service.inference import Ranker, RankRequest, prompt_tokens, soft_row
from tests.support.databases import prepared_database
from tests.support.gateway_app import (
    finished_admin_job,
    new_user_id,
    run_async,
    write_user_prompt,
)
from tests.support.settings import admin_headers, service_settings
from tests.support.soft_prompts import TEST_CONFIG, model_side_ranking, save_composer

HISTORY = [f"m{i}" for i in range(0, 60, 6)]  # ten items, oldest first
# The whole ranking of the 60 items but the history: vectors on the untrained tiny model
# reorder it, if not always its first ten.
COUNT = 50
COMPONENTS = [(3, 0.5), (1, 0.25), (6, 0.125)]


def _vectors(lm, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(4, lm.model.config.n_embd)) * scale).astype(np.float32)


async def write_soft_version(runtime, user_id: str, vectors: np.ndarray) -> int:
    """What the worker writes for a soft fit, then the cache invalidation."""
    from promptrec.core.cached_reads import invalidate_user_prompt
    from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt

    outcome = FitOutcome(vectors, COMPONENTS, -4.5, -4.25, True, 2)
    async with runtime.sessions() as session:
        row = await add_user_prompt(
            session,
            SearchedPrompt(
                user_id,
                "sequential",
                runtime.fingerprint,
                [],
                -4.5,
                -4.25,
                strategy="soft",
                state=soft_state(outcome, TEST_CONFIG, "c0ffee"),
                vectors=vectors_to_bytes(vectors),
            ),
        )
        await session.commit()
    await invalidate_user_prompt(runtime.cache, runtime.fingerprint, "sequential", user_id)
    return row.version


def test_a_soft_version_is_served_with_its_vectors_and_shown_without_them(service):
    user = new_user_id()
    body = {"count": COUNT, "history": HISTORY}
    before = service.client.post(f"/v1/users/{user}/recommendations", json=body).json()
    vectors = _vectors(service.runtime.lm)
    version = run_async(service, write_soft_version, service.runtime, user, vectors)
    prompt = service.client.get(f"/v1/users/{user}/prompt", params={"task": "sequential"})
    view = prompt.json()
    assert (view["strategy"], view["version"], view["personalized"]) == ("soft", version, True)
    assert view["soft"] == {
        "n_vectors": 4,
        "template": "seq-1",
        "composer": "c0ffee",
        "components": [{"component": i, "weight": w} for i, w in COMPONENTS],
        "fit": {"before": -4.5, "after": -4.25, "kept": True, "steps": 2},
    }
    assert view["text"] == TEMPLATES["seq-1"].text and view["task_tokens"] == []
    assert (view["metric_before"], view["metric_after"]) == (-4.5, -4.25)
    raw = base64.b64encode(vectors_to_bytes(vectors)).decode()
    assert '"vectors"' not in prompt.text and raw[:24] not in prompt.text
    for _ in range(2):  # read from the database, then from the cache (Redis: base64 in JSON)
        after = service.client.post(f"/v1/users/{user}/recommendations", json=body).json()
        assert after["prompt"] == {"version": version, "task_version": 0, "personalized": True}
        lm, catalog = service.runtime.lm, service.runtime.catalog
        history = [catalog.index_of[i] for i in HISTORY]
        items, scores = model_side_ranking(lm, catalog, history, vectors, COUNT)
        assert [i["item_id"] for i in after["items"]] == items
        np.testing.assert_allclose([i["score"] for i in after["items"]], scores, atol=1e-4)
    assert [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]


def test_one_batch_scores_soft_rows_as_the_model_side_and_zero_vectors_as_the_plain_prompt(
    service,
):
    lm, catalog = service.runtime.lm, service.runtime.catalog
    histories = [[catalog.index_of[f"m{i}"] for i in range(s, 60, 6)] for s in range(5)]

    def plain(history):
        tokens = prompt_tokens(lm, catalog, "sequential", history, [], UserPrompt())
        return RankRequest(tokens, COUNT, tuple(history))

    def soft(history, vectors):
        tokens = prompt_tokens(
            lm, catalog, "sequential", history, [], UserPrompt(), soft_template="seq-1"
        )
        return RankRequest(
            tokens, COUNT, tuple(history), soft=soft_row(lm, tokens, len(history), vectors)
        )

    # the last: a version of an earlier composer with two vectors (padded in the batch)
    vectors = [_vectors(lm, 1), _vectors(lm, 2), _vectors(lm, 3)[:2]]
    zero = np.zeros_like(vectors[0])
    ranker = Ranker(lm)
    batch = ranker.rank(
        [
            plain(histories[0]),
            soft(histories[1], vectors[0]),
            soft(histories[2], zero),
            soft(histories[3], vectors[1]),
            soft(histories[4], vectors[2]),
        ]
    )
    alone = ranker.rank([plain(h) for h in histories])  # token ids only: the fast path
    assert batch[0].items == alone[0].items  # the plain row, scored from its embeddings
    np.testing.assert_allclose(batch[0].scores, alone[0].scores, atol=1e-5)
    for row, v in ((1, vectors[0]), (3, vectors[1]), (4, vectors[2])):
        items, scores = model_side_ranking(lm, catalog, histories[row], v, COUNT)
        assert [catalog.item_ids[i] for i in batch[row].items] == items
        np.testing.assert_allclose(batch[row].scores, scores, atol=1e-5)
        assert batch[row].items != alone[row].items
    # zero vectors: exactly the plain prompt (the soft template is the served one, seq-1)
    assert batch[2].items == alone[2].items
    np.testing.assert_allclose(batch[2].scores, alone[2].scores, atol=1e-5)


@pytest.fixture
def soft_gateway(tmp_path, lm, dataset_dir):
    """An embedded gateway whose worker fits soft jobs with a composer for the tiny model."""
    url = prepared_database(f"sqlite:///{tmp_path / 'soft.db'}", dataset_dir)
    settings = service_settings(
        url,
        embedded_worker=True,
        new_user_events=10_000,  # only the admin job searches
        drift_events=10_000,
        soft_composer_path=save_composer(tmp_path / "composer", lm),
    )
    with TestClient(gateway_app(settings, lm=lm)) as client:
        yield client


def test_an_admin_soft_job_writes_a_soft_version_and_rollback_restores_the_previous(
    soft_gateway,
):
    client = soft_gateway
    runtime = client.app.state.runtime
    first = client.portal.call(write_user_prompt, runtime, "u5", "sequential", ["comedy"])
    ranked_url = "/v1/users/u5/recommendations"
    tokens_ranking = client.post(ranked_url, json={"count": COUNT}).json()["items"]
    created, job = finished_admin_job(client, {"user_ids": ["u5"], "strategy": "soft"}, 60)
    assert created["strategy"] == "soft"
    assert job["strategy"] == "soft" and job["users"][0]["outcome"] == "personalized"
    view = client.get("/v1/users/u5/prompt", params={"task": "sequential"}).json()
    assert (view["strategy"], view["version"], view["personalized"]) == ("soft", first + 1, True)
    soft = view["soft"]
    k = TEST_CONFIG.n_vectors
    assert soft["n_vectors"] == k and soft["composer"] == runtime.soft.fingerprint
    assert len(soft["components"]) == 3 and all(0 < c["weight"] <= 1 for c in soft["components"])
    assert isinstance(soft["fit"]["before"], float) and soft["fit"]["steps"] in (0, 2, 4)
    assert soft["fit"]["kept"] == (soft["fit"]["steps"] > 0)
    soft_ranking = client.post(ranked_url, json={"count": COUNT}).json()
    assert soft_ranking["prompt"]["version"] == first + 1
    assert soft_ranking["items"] != tokens_ranking
    back = client.post(
        "/v1/admin/users/u5/prompt/rollback?task=sequential", headers=admin_headers()
    ).json()
    assert (back["strategy"], back["version"], back["personal_tokens"]) == (
        "paprec",
        first,
        ["comedy"],
    )
    assert back["soft"] is None
    assert client.post(ranked_url, json={"count": COUNT}).json()["items"] == tokens_ranking


@pytest.mark.parametrize("composer", ["missing", "another model"])
def test_a_soft_gateway_without_a_usable_composer_is_not_ready_and_refuses_soft_jobs(
    tmp_path, lm, embedded_url, composer
):
    path = tmp_path / "composer"
    if composer == "another model":
        save_composer(path, lm, fingerprint="0123456789abcdef")
    settings = service_settings(embedded_url, strategy="soft", soft_composer_path=path)
    with TestClient(gateway_app(settings, lm=lm)) as client:
        ready = client.get("/health/ready")
        job = client.post(
            "/v1/admin/prompt-search-jobs", json={"user_ids": ["u1"]}, headers=admin_headers()
        )
        paprec = client.post(
            "/v1/admin/prompt-search-jobs",
            json={"user_ids": ["u1"], "strategy": "paprec"},
            headers=admin_headers(),
        )
        served = client.post("/v1/users/u1/recommendations", json={"count": 3})
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    why = ready.json()["checks"]["soft_composer"]
    expected = "holds no soft-prompt composer" if composer == "missing" else "0123456789abcdef"
    assert str(path) in why and expected in why and "promptrec search --strategy soft" in why
    assert job.status_code == 409 and why in job.json()["detail"]
    assert paprec.status_code == 202  # other strategies need no composer
    assert served.status_code == 200  # serving needs none either


def test_a_soft_set_file_loads_as_soft_versions_once_and_is_served(tmp_path, lm, dataset_dir):
    url = prepared_database(f"sqlite:///{tmp_path / 'load.db'}", dataset_dir)
    composer = SoftComposer(lm.model.config.n_embd, TEST_CONFIG.pool_size, 4)
    vectors = {u: _vectors(lm, seed) for seed, u in enumerate(("u1", "u2", "stranger"))}
    outcomes = {u: FitOutcome(v, COMPONENTS, -4.5, -4.25, True, 2) for u, v in vectors.items()}
    path = tmp_path / "soft.json"
    state = SoftState(composer, {}, outcomes)
    SoftPromptSet("sequential", TEST_CONFIG, state, lm.fingerprint()).save(path)
    engine = make_sync_engine(url)
    first = load_prompt_set(engine, path)
    again = load_prompt_set(engine, path)  # what `make run` does at every start
    with Session(engine) as session:
        row = session.scalar(select(PromptRow).where(PromptRow.user_id == "u1"))
    engine.dispose()
    assert first.line().startswith("soft prompts: ")
    assert (first.users_added, first.users_unknown) == (2, 1)
    assert (again.users_added, again.users_unchanged) == (0, 2)
    assert (row.strategy, row.version, row.vectors) == ("soft", 1, vectors_to_bytes(vectors["u1"]))
    assert row.state["composer"] == weights_fingerprint(tmp_path / "soft-composer")
    with TestClient(gateway_app(service_settings(url), lm=lm)) as client:
        view = client.get("/v1/users/u1/prompt", params={"task": "sequential"}).json()
    assert (view["strategy"], view["version"]) == ("soft", 1)
    assert view["soft"]["fit"] == {"before": -4.5, "after": -4.25, "kept": True, "steps": 2}

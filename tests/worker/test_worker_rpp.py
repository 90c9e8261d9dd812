"""RPP end to end, with the shipped small model, its RPP policy and MovieLens-100k: the choices
file loads as versions of strategy rpp (never twice), a new user who posts events over HTTP is
given the policy's choice by the worker and is then served it (prompt view and ranking), and a
`promptrec worker` process killed mid-batch of an RPP job loses no user and writes no version
twice; a drifting user keeps a stored choice that still beats the policy's rival on their recent
events and is searched again otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.cli.demo import cold_users
from promptrec.cli.gateway import gateway_app
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import JobOutcome, JobScope, JobStatus, UserPrompt
from promptrec.core.queue import SearchTask
from promptrec.core.repositories.jobs import WorkItem
from promptrec.core.repositories.users import UserData
from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits
from promptrec.models.prompts.rpp.slots import (
    all_choices,
    choice_from_names,
    choice_names,
    render_choice,
)
from promptrec.models.prompts.rpp.state import RppPromptSet
from promptrec.models.prompts.selection import earliest_fields
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog, profile_words
from promptrec.service.inference import Ranker, RankRequest
from promptrec.worker.rpp_searcher import RppSearcher, rpp_outcomes
from promptrec.worker.searcher import user_examples
from tests.support.databases import prepared_database
from tests.support.paths import REPO, SMALL_MODEL
from tests.support.processes import wait_for
from tests.support.settings import service_settings
from tests.support.worker_process import kill_mid_batch_then_finish
from tests.worker.conftest import USERS, assert_every_user_has_one_new_version, queued_job

RPP_CHOICES = REPO / "artifacts" / "prompts" / "rpp.json"


def test_the_rpp_choices_file_loads_as_rpp_versions_once(tmp_path, movielens_dir):
    url = prepared_database(f"sqlite:///{tmp_path / 'rpp.db'}", movielens_dir)
    engine = make_sync_engine(url)
    first = load_prompt_set(engine, RPP_CHOICES)
    again = load_prompt_set(engine, RPP_CHOICES)  # what `make run` does at every start
    expected = RppPromptSet.load(RPP_CHOICES).state.outcomes
    assert first.users_added == len(expected) and first.line().startswith("rpp choices: ")
    assert again.users_added == 0 and again.users_unchanged == len(expected)
    with Session(engine) as session:
        row = session.scalar(select(UserPrompt).where(UserPrompt.user_id == "1"))
    engine.dispose()
    assert (row.strategy, row.tokens, row.version) == ("rpp", [], 1)
    assert choice_from_names(row.state) == expected["1"].choice


def test_a_new_user_posting_events_is_given_an_rpp_choice_and_served_it(tmp_path, movielens_dir):
    url = prepared_database(f"sqlite:///{tmp_path / 'embedded.db'}", movielens_dir)
    settings = service_settings(
        url,
        model_path=SMALL_MODEL,
        embedded_worker=True,
        strategy="rpp",
        rpp_choices_path=RPP_CHOICES,
        new_user_events=5,
        worker_scheduler_interval_s=0.5,
    )
    user = cold_users(movielens_dir, 1)[0]
    lm = RecLM.load(SMALL_MODEL)
    with TestClient(gateway_app(settings, lm=lm)) as client:
        events = [
            {"event_id": f"e{k}", "user_id": user.user_id, "item_id": item, "timestamp": 1000 + k}
            for k, item in enumerate(user.history)
        ]
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == len(events)
        prompt_url = f"/v1/users/{user.user_id}/prompt"

        def searched() -> bool:
            return client.get(prompt_url, params={"task": "sequential"}).json()["version"] > 0

        wait_for(searched, 120, "the in-process worker to give the new user an RPP choice")
        view = client.get(prompt_url, params={"task": "sequential"}).json()
        ranked = client.post(f"/v1/users/{user.user_id}/recommendations", json={"count": 10})
        catalog = client.app.state.runtime.catalog
    assert view["strategy"] == "rpp" and view["personalized"]
    assert view["choice_text"] and view["metrics"]["choice"] == "/".join(view["choice"].values())
    assert ranked.json()["prompt"]["version"] == view["version"]
    # The recommendations are the ranking of the choice's prompt for the user's history.
    history = [catalog.index_of[i] for i in user.history]
    fields = PromptFields(history, profile_words(None, None, None), catalog.taste_words(history))
    tokens = render_choice(choice_from_names(view["choice"]), fields, lm.max_history)
    expected = Ranker(lm).rank([RankRequest(tokens, 10, tuple(history))])[0].items
    assert [i["item_id"] for i in ranked.json()["items"]] == [catalog.item_ids[i] for i in expected]


def test_a_worker_killed_mid_batch_of_an_rpp_job_loses_no_user(
    tmp_path,
    movielens_database,
    redis_server,
    small_fingerprint,
):
    env, before, view = queued_job(
        movielens_database,
        redis_server.url,
        small_fingerprint,
        "rpp",
        rpp_choices_path=str(RPP_CHOICES),
    )
    kill_mid_batch_then_finish(env, tmp_path, view, len(USERS))
    assert_every_user_has_one_new_version(view, movielens_database, before)
    engine = make_sync_engine(movielens_database)
    with Session(engine) as session:
        written = session.scalars(
            select(UserPrompt.strategy).where(UserPrompt.job_id == view.job_id)
        ).all()
    engine.dispose()
    view.close()
    assert written == ["rpp"] * len(USERS)


def _drifting_users(searcher: RppSearcher, histories: list[list[str]]):
    """Users four events after their search, each stored with the slot choice that scores best
    on those events and one with the worst (the scorer's own NDCG@10, each item from the
    history before it), where the two differ from the policy's rival."""
    for n, history in enumerate(histories):
        probe = UserData(f"probe{n}", history, 30.0, "F", "artist", [], 4)
        examples = user_examples(searcher.catalog, [probe], 4, 0)
        rival = searcher.search.choose(searcher.policy, earliest_fields(examples))[0]
        choices = all_choices()
        scores = [
            searcher.search.scorer.score(examples.fields, examples.targets, [c] * 4)[0].mean()
            for c in choices
        ]
        rival_score = scores[choices.index(rival)]
        best, worst = choices[int(np.argmax(scores))], choices[int(np.argmin(scores))]
        if max(scores) > rival_score > min(scores):
            return (
                [
                    UserData(name, history, 30.0, "F", "artist", [], 4, rpp_choice=choice_names(c))
                    for name, c in (("keeps", best), ("loses", worst))
                ],
                {"keeps": max(scores), "loses": min(scores)},
                rival_score,
            )
    raise AssertionError("no user whose choices score differently on their recent events")


def test_a_drifting_rpp_user_keeps_a_choice_that_still_wins_and_is_searched_again_otherwise(
    movielens_dir,
):
    data = InteractionData.load(movielens_dir)
    splits = make_splits(data)
    lm = RecLM.load(SMALL_MODEL)
    searcher = RppSearcher.from_file(lm, ItemCatalog.build(data.items, splits), RPP_CHOICES)
    assert searcher.policy is not None
    histories = [[splits.item_ids[i] for i in splits.train[u]] for u in splits.user_indices("cold")]
    users, stored_scores, rival_score = _drifting_users(searcher, histories[:20])
    checks = searcher.drift(users)
    for u in users:  # the check's figures: the stored choice's and the rival's, recomputed
        assert checks[u.user_id].personal == pytest.approx(stored_scores[u.user_id], abs=1e-6)
        assert checks[u.user_id].task_level == pytest.approx(rival_score, abs=1e-6)
    assert checks["keeps"].personal_wins and not checks["loses"].personal_wins

    batch = [SearchTask("job", u.user_id, "sequential") for u in users]
    items = {s.key: WorkItem(s, JobScope.DRIFTING, JobStatus.RUNNING, 1, "rpp") for s in batch}
    by_id = {u.user_id: u for u in users}
    outcomes, errors, _ = rpp_outcomes(searcher, "fp", batch, items, by_id)
    found = {o.search.user_id: o for o in outcomes}
    assert errors == {}
    assert (found["keeps"].outcome, found["keeps"].prompt) == (JobOutcome.PERSONAL_STILL_WINS, None)
    again = found["loses"].prompt
    assert found["loses"].outcome == JobOutcome.PERSONALIZED and again is not None
    assert again.strategy == "rpp" and again.state is not None

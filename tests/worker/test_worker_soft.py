"""Soft prompts in the worker: a new user who posts events over HTTP is fitted by the worker
and then served the stored vectors (the model side's ranking of them, not the plain prompt's);
a drifting user keeps vectors that still beat the composition on their recent events and is
fitted again otherwise; a `promptrec worker` process killed mid-batch of a soft job loses no
user and writes no version twice."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.cli.gateway import gateway_app
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.tables import JobOutcome, JobScope, JobStatus, UserPrompt
from promptrec.core.queue import SearchTask
from promptrec.core.repositories.jobs import WorkItem
from promptrec.core.repositories.users import UserData
from promptrec.core.soft_composer import load_composer
from promptrec.core.soft_versions import SoftVersion
from promptrec.models.prompts.rendering import UserPrompt as Tokens
from promptrec.models.prompts.soft.composer import interest, soft_item_logits
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.prompts.soft.state import vectors_from_bytes
from promptrec.models.rlm.model import RecLM
from promptrec.models.user_context import ItemCatalog
from promptrec.service.inference import Ranker, RankRequest, prompt_tokens
from promptrec.worker.searcher import user_examples
from promptrec.worker.soft_searcher import SoftSearcher, soft_outcomes
from tests.support.databases import prepared_database
from tests.support.paths import REPO, SMALL_MODEL
from tests.support.processes import promptrec_command, wait_for
from tests.support.settings import service_settings, worker_env
from tests.support.soft_prompts import model_side_ranking, save_composer
from tests.support.worker_process import kill_mid_batch_then_finish
from tests.worker.conftest import USERS, assert_every_user_has_one_new_version, queued_job

NEW_USER_ITEMS = [f"m{i}" for i in range(1, 60, 6)]  # ten items of one genre, oldest first
COUNT = 50  # the whole ranking but the history: the tiny model's first ten may not move


def test_a_new_user_posting_events_is_fitted_and_served_their_soft_prompt(
    tmp_path, lm, dataset_dir
):
    url = prepared_database(f"sqlite:///{tmp_path / 'embedded.db'}", dataset_dir)
    settings = service_settings(
        url,
        embedded_worker=True,
        strategy="soft",
        soft_composer_path=save_composer(tmp_path / "composer", lm),
        new_user_events=5,
        worker_scheduler_interval_s=0.2,
    )
    user = "newcomer"
    events = [
        {"event_id": f"e{k}", "user_id": user, "item_id": item, "timestamp": 2_000_000 + k}
        for k, item in enumerate(NEW_USER_ITEMS)
    ]
    with TestClient(gateway_app(settings, lm=lm)) as client:
        assert client.get("/health/ready").json()["checks"]["soft_composer"] == "ok"
        assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 10
        prompt_url = f"/v1/users/{user}/prompt"

        def fitted() -> bool:
            return client.get(prompt_url, params={"task": "sequential"}).json()["version"] > 0

        wait_for(fitted, 30, "the in-process worker to fit the new user's soft prompt")
        view = client.get(prompt_url, params={"task": "sequential"}).json()
        ranked = client.post(f"/v1/users/{user}/recommendations", json={"count": COUNT}).json()
        catalog = client.app.state.runtime.catalog
    assert (view["strategy"], view["personalized"]) == ("soft", True)
    assert ranked["prompt"]["version"] == view["version"]
    fit = view["soft"]["fit"]
    assert fit["before"] is not None and fit["kept"] == (fit["steps"] > 0)
    engine = make_sync_engine(url)
    with Session(engine) as session:
        stored = session.scalar(select(UserPrompt.vectors).where(UserPrompt.user_id == user))
    engine.dispose()
    vectors = vectors_from_bytes(stored, view["soft"]["n_vectors"])
    history = [catalog.index_of[i] for i in NEW_USER_ITEMS]
    items, _ = model_side_ranking(lm, catalog, history, vectors, COUNT)
    assert [i["item_id"] for i in ranked["items"]] == items
    tokens = prompt_tokens(lm, catalog, "sequential", history, [], Tokens())
    plain = Ranker(lm).rank([RankRequest(tokens, COUNT, tuple(history))])[0].items
    assert items != [catalog.item_ids[i] for i in plain]  # the stored vectors change them


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, lm, data, splits) -> SoftSearcher:
    path = save_composer(tmp_path_factory.mktemp("composer"), lm)
    catalog = ItemCatalog.build(data.items, splits)
    return SoftSearcher(lm, catalog, load_composer(path, lm, lm.fingerprint()))


def _drifting(searcher: SoftSearcher, user_id: str, sign: float) -> UserData:
    """A user of the synthetic data four events after their search, whose stored vectors are
    the composition from before those events moved by gradient steps on them: up (`sign` 1,
    better on them by construction) or down (-1, worse)."""
    history = [f"m{i}" for i in range(0, 60, 6)]
    user = UserData(user_id, history, 30.0, "F", "artist", [], 4)
    examples = user_examples(searcher.catalog, [user], 4, 0)
    config = searcher.config
    with torch.no_grad():
        start = searcher.loaded.composer(interest(searcher.lm, examples.fields[:1], config))
    vectors = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([vectors], lr=0.05)
    targets = torch.tensor(examples.targets)
    for _ in range(10):
        logits = soft_item_logits(
            searcher.lm, examples.fields, vectors.expand(len(targets), -1, -1), config.template
        )
        logp = torch.log_softmax(logits.float(), 1).gather(1, targets[:, None]).mean()
        optimizer.zero_grad()
        (-sign * logp).backward()
        optimizer.step()
    stored = SoftVersion(vectors.detach()[0].numpy(), config.template)
    return UserData(user_id, history, 30.0, "F", "artist", [], 4, soft=stored)


def test_a_drifting_user_keeps_vectors_that_still_win_and_is_fitted_again_otherwise(searcher):
    users = {u.user_id: u for u in (_drifting(searcher, "a", 1.0), _drifting(searcher, "b", -1.0))}
    checks = searcher.drift(list(users.values()))
    # The check's figures: the mean log-probability of the four recent items, each from the
    # history before it, with the stored vectors and with the composition from before them.
    examples = user_examples(searcher.catalog, [users["a"]], 4, 0)
    config, lm = searcher.config, searcher.lm
    with torch.inference_mode():
        rival = searcher.loaded.composer(interest(lm, examples.fields[:1], config))
    for vectors, figure in (
        (torch.from_numpy(users["a"].soft.vectors)[None], checks["a"].personal),
        (rival, checks["a"].task_level),
    ):
        with torch.inference_mode():
            logits = soft_item_logits(lm, examples.fields, vectors.expand(4, -1, -1), "seq-1")
        logp = torch.log_softmax(logits.float(), 1)[range(4), examples.targets]
        assert figure == pytest.approx(float(logp.mean()), abs=1e-5)
    assert checks["a"].personal_wins and not checks["b"].personal_wins
    batch = [SearchTask("job", u, "sequential") for u in users]
    items = {s.key: WorkItem(s, JobScope.DRIFTING, JobStatus.RUNNING, 1, "soft") for s in batch}
    outcomes, errors, _ = soft_outcomes(searcher, "fp", batch, items, users)
    by_user = {o.search.user_id: o for o in outcomes}
    assert errors == {}
    assert (by_user["a"].outcome, by_user["a"].prompt) == (JobOutcome.PERSONAL_STILL_WINS, None)
    fitted = by_user["b"].prompt
    assert by_user["b"].outcome == JobOutcome.PERSONALIZED and fitted is not None
    k = searcher.config.n_vectors
    assert fitted.strategy == "soft" and fitted.state["n_vectors"] == k
    assert not np.array_equal(vectors_from_bytes(fitted.vectors, k), users["b"].soft.vectors)


def test_a_soft_job_without_a_composer_waits_for_a_worker_that_has_one():
    batch = [SearchTask("job", "u1", "sequential")]
    items = {batch[0].key: WorkItem(batch[0], JobScope.USERS, JobStatus.RUNNING, 1, "soft")}
    outcomes, errors, final = soft_outcomes(None, "fp", batch, items, {})
    assert outcomes == [] and final == set()  # not final: delivered again
    assert "no soft-prompt composer" in errors[batch[0].key]


@pytest.fixture(scope="module")
def small_composer(tmp_path_factory, small_fingerprint):
    """A composer for the shipped small model, with the default fit settings."""
    directory = tmp_path_factory.mktemp("small-composer")
    return save_composer(
        directory, RecLM.load(SMALL_MODEL), SoftConfig(), fingerprint=small_fingerprint
    )


def test_a_worker_killed_mid_batch_of_a_soft_job_loses_no_user(
    tmp_path, movielens_database, redis_server, small_fingerprint, small_composer
):
    env, before, view = queued_job(
        movielens_database,
        redis_server.url,
        small_fingerprint,
        "soft",
        soft_composer_path=str(small_composer),
    )
    kill_mid_batch_then_finish(env, tmp_path, view, len(USERS))
    assert_every_user_has_one_new_version(view, movielens_database, before)
    engine = make_sync_engine(movielens_database)
    with Session(engine) as session:
        written = session.execute(
            select(UserPrompt.strategy, UserPrompt.vectors).where(UserPrompt.job_id == view.job_id)
        ).all()
    engine.dispose()
    view.close()
    assert sorted(strategy for strategy, _ in written) == ["soft"] * len(USERS)
    k = SoftConfig().n_vectors
    assert all(vectors_from_bytes(v, k).shape == (k, 64) for _, v in written)


def test_a_soft_worker_without_a_composer_does_not_start_and_says_why(tmp_path, model_dir):
    env = worker_env(
        f"sqlite:///{tmp_path / 'unused.db'}",
        "redis://127.0.0.1:1/0",  # never reached: the composer is checked first
        model_dir,
        strategy="soft",
        soft_composer_path=str(tmp_path / "nothing-here"),
    )
    done = subprocess.run(
        [*promptrec_command(), "worker"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]  # after the same words as a JSON log line
    assert last.startswith("error: PROMPTREC_STRATEGY=soft: ")
    assert f"{tmp_path / 'nothing-here'} holds no soft-prompt composer" in last

"""`promptrec db load-prompts`: a searched prompt set becomes what the API serves."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.prompts.paprec.config import PaprecConfig
from models.prompts.paprec.state import PaprecState, PromptSet, UserOutcome
from service.db import migrate
from service.db.dataset_loader import load_dataset
from service.db.engine import make_sync_engine
from service.db.prompt_loader import load_prompt_set
from service.db.tables import PromptSet as PromptSetRow
from service.db.tables import UserPrompt


def _outcome(tokens: list[str], kept: bool) -> UserOutcome:
    return UserOutcome(tokens, 0.1, 0.3 if kept else 0.1, -5.0, -4.0 if kept else -6.0, kept)


def test_loading_is_versioned_and_idempotent(tmp_path, data):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(url)
    engine = make_sync_engine(url)
    data.save(tmp_path / "ds")
    load_dataset(engine, tmp_path / "ds")
    state = PaprecState(task_tokens=["stranger", "the"])
    state.apply(
        {
            "u1": _outcome(["horror", "the"], True),
            "u2": _outcome(["drama", "x"], False),
            "nobody": _outcome(["war", "the"], True),
        }
    )
    path = tmp_path / "prompts.json"
    PromptSet("sequential", PaprecConfig(task_tokens=2), state, "abc123").save(path)

    first = load_prompt_set(engine, path)
    assert (first.task_added, first.task_version) == (True, 1)
    assert (first.users_added, first.users_unknown) == (1, 1)  # u2 kept none; "nobody" unknown
    again = load_prompt_set(engine, path)
    assert (again.task_added, again.users_added, again.users_unchanged) == (False, 0, 1)

    state.task_tokens = ["rebel", "the"]
    state.apply({"u1": _outcome(["scifi", "the"], True)})
    PromptSet("sequential", PaprecConfig(task_tokens=2), state, "abc123").save(path)
    third = load_prompt_set(engine, path)
    assert (third.task_added, third.task_version, third.users_added) == (True, 2, 1)
    with Session(engine) as session:
        versions = session.scalars(
            select(UserPrompt.version)
            .where(UserPrompt.user_id == "u1")
            .order_by(UserPrompt.version)
        ).all()
        assert versions == [1, 2]
        latest = session.scalar(select(PromptSetRow).order_by(PromptSetRow.version.desc()))
        assert latest.tokens == ["rebel", "the"] and latest.model_fingerprint == "abc123"
    engine.dispose()

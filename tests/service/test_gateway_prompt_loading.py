"""`promptrec db load-prompts`: a searched prompt set becomes what the API serves."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.core.db import migrate
from promptrec.core.db.dataset_loader import load_dataset
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import PromptSet as PromptSetRow
from promptrec.core.db.tables import UserPrompt
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet, UserOutcome


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
    # u2 kept none (a version with no tokens: searched); "nobody" is not in the database
    assert (first.users_added, first.users_unknown) == (2, 1)
    again = load_prompt_set(engine, path)
    assert (again.task_added, again.users_added, again.users_unchanged) == (False, 0, 2)

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
        u2 = session.scalars(select(UserPrompt.tokens).where(UserPrompt.user_id == "u2")).all()
        assert u2 == [[]]
        latest = session.scalar(select(PromptSetRow).order_by(PromptSetRow.version.desc()))
        assert latest.tokens == ["rebel", "the"] and latest.model_fingerprint == "abc123"
    engine.dispose()


def test_the_command_refuses_a_prompt_set_searched_on_another_model(
    tmp_path, model_dir, monkeypatch, capsys
):
    from promptrec.cli.main import main
    from promptrec.core.settings import get_settings

    path = tmp_path / "prompts.json"
    state = PaprecState(task_tokens=["the"])
    PromptSet("sequential", PaprecConfig(task_tokens=1), state, "not-this-model").save(path)
    monkeypatch.setenv("PROMPTREC_DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setenv("PROMPTREC_MODEL_PATH", str(model_dir))
    get_settings.cache_clear()
    try:
        assert main(["db", "load-prompts", str(path)]) == 1
    finally:
        get_settings.cache_clear()
    assert "searched on model not-this-model" in capsys.readouterr().err


def test_a_prompt_set_searched_after_another_template_is_refused(tmp_path):
    import pytest

    url = f"sqlite:///{tmp_path / 'p.db'}"
    migrate.upgrade(url)
    engine = make_sync_engine(url)
    path = tmp_path / "prompts.json"
    state = PaprecState(task_tokens=["the"])
    PromptSet("sequential", PaprecConfig(template="seq-3"), state, "abc123").save(path)
    with pytest.raises(ValueError, match="searched after template seq-3"):
        load_prompt_set(engine, path)
    engine.dispose()

"""Alembic from empty to head and back on Postgres and SQLite, `alembic check` clean, and the
`promptrec db` commands (idempotent dataset load)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from promptrec.cli.main import main
from promptrec.core.db import migrate
from promptrec.core.db.engine import make_sync_engine
from promptrec.core.db.tables import Interaction, Item, User
from promptrec.core.settings import get_settings
from tests.support.databases import temporary_postgres_database

TABLES = {
    "users",
    "items",
    "interactions",
    "prompt_sets",
    "user_prompts",
    "search_jobs",
    "search_job_users",
}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        with temporary_postgres_database() as url:
            yield url


def _tables(url):
    engine = make_sync_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_head_from_empty_check_clean_and_downgrade_base(empty_database):
    migrate.upgrade(empty_database)
    assert _tables(empty_database) == TABLES
    migrate.check(empty_database)  # raises if the models and the migrations differ
    migrate.downgrade(empty_database, "base")
    assert _tables(empty_database) == set()
    migrate.upgrade(empty_database)
    assert _tables(empty_database) == TABLES


def test_db_commands_upgrade_and_load_a_dataset_idempotently(
    tmp_path, dataset_dir, data, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("PROMPTREC_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 0
        assert main(["db", "load-dataset", "--data", str(dataset_dir)]) == 0
        assert main(["db", "load-dataset", "--data", str(dataset_dir)]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert f"added {data.users['user'].nunique()} users" in out
    assert "added 0 users, 0 items, 0 interactions" in out
    engine = make_sync_engine(url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Interaction)) == len(
            data.interactions
        )
        assert session.scalar(select(func.count()).select_from(Item)) == len(data.items)
        user = session.get(User, "u3")
        assert user.occupation == "doctor" and user.event_count == 14
    engine.dispose()


def test_load_dataset_reports_a_missing_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROMPTREC_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    get_settings.cache_clear()
    try:
        assert main(["db", "load-dataset", "--data", str(tmp_path / "nothing")]) == 1
    finally:
        get_settings.cache_clear()
    assert "holds no dataset" in capsys.readouterr().err


def test_serve_and_db_commands_have_help_and_serve_names_a_missing_model(tmp_path, capsys):
    for command in (["serve"], ["db", "upgrade"], ["db", "load-dataset"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: promptrec" in capsys.readouterr().out
    assert main(["serve", "--model", str(tmp_path / "no-model")]) == 1
    assert "no model in" in capsys.readouterr().err


def test_items_recorded_before_the_dataset_get_its_titles(tmp_path, dataset_dir, data):
    """The API records the model's items at start; a dataset loaded later fills their titles."""
    from promptrec.core.db.dataset_loader import load_dataset

    url = f"sqlite:///{tmp_path / 'late.db'}"
    migrate.upgrade(url)
    engine = make_sync_engine(url)
    first = data.items.iloc[0]
    with Session(engine) as session, session.begin():
        session.add(Item(item_id=str(first["item"])))  # what the API's start-up writes
        session.add(Item(item_id="kept", title="my own title"))
    load_dataset(engine, dataset_dir)
    with Session(engine) as session:
        assert session.get(Item, str(first["item"])).title == first["title"]
        assert session.get(Item, "kept").title == "my own title"
    engine.dispose()

"""Prompt versions: a prompt set file never replaces a newer version, the set's search settings
are stored with it and used by later searches, and concurrent writers never collide."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from promptrec.core.db.engine import make_async_engine, make_session_factory, make_sync_engine
from promptrec.core.db.prompt_loader import load_prompt_set
from promptrec.core.db.tables import PromptSet as PromptSetRow
from promptrec.core.db.tables import UserPrompt
from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet, UserOutcome
from tests.support.databases import prepared_database, temporary_postgres_database


def _outcome(tokens: list[str], kept: bool = True) -> UserOutcome:
    return UserOutcome(tokens, 0.1, 0.3 if kept else 0.1, -5.0, -4.0 if kept else -6.0, kept)


def _prompt_file(
    tmp_path, config: PaprecConfig, users: dict[str, list[str]], created_at: float, task="stranger"
):
    state = PaprecState(task_tokens=[task] * config.task_tokens)
    state.apply({u: _outcome(tokens) for u, tokens in users.items()})
    path = tmp_path / f"prompts-{created_at}.json"
    PromptSet("sequential", config, state, "abc123", created_at).save(path)
    return path


def _versions(engine, user_id: str) -> list[tuple[int, list[str]]]:
    with Session(engine) as session:
        rows = session.execute(
            select(UserPrompt.version, UserPrompt.tokens)
            .where(UserPrompt.user_id == user_id)
            .order_by(UserPrompt.version)
        ).all()
    return [(v, list(t)) for v, t in rows]


def test_reloading_a_prompt_set_never_replaces_a_newer_searched_version(tmp_path, dataset_dir):
    url = prepared_database(f"sqlite:///{tmp_path / 'p.db'}", dataset_dir)
    engine = make_sync_engine(url)
    config = PaprecConfig(task_tokens=2)
    searched_at = time.time() - 3600
    path = _prompt_file(
        tmp_path, config, {"u1": ["horror", "the"], "u2": ["war", "x"]}, searched_at
    )
    load_prompt_set(engine, path)

    async def worker_searches_u1() -> None:  # after the file was made: newer than the file
        async_engine = make_async_engine(url)
        async with make_session_factory(async_engine)() as session:
            await add_user_prompt(session, SearchedPrompt("u1", "sequential", "abc123", ["love"]))
            await session.commit()
        await async_engine.dispose()

    asyncio.run(worker_searches_u1())
    report = load_prompt_set(engine, path)  # what `make run` does at every start
    assert report.users_added == 0
    assert _versions(engine, "u1") == [(1, ["horror", "the"]), (2, ["love"])]
    assert _versions(engine, "u2") == [(1, ["war", "x"])]
    # A file searched later than the worker's version does replace it.
    later = _prompt_file(tmp_path, config, {"u1": ["scifi", "the"]}, time.time() + 60)
    assert load_prompt_set(engine, later).users_added == 1
    assert _versions(engine, "u1")[-1] == (3, ["scifi", "the"])
    # An older file does not take back the task tokens of a newer one either.
    older = _prompt_file(tmp_path, config, {}, searched_at - 60, task="rebel")
    assert load_prompt_set(engine, older).task_added is False
    with Session(engine) as session:
        assert session.scalars(select(PromptSetRow.tokens)).all() == [["stranger", "stranger"]]
    engine.dispose()


def test_the_prompt_set_config_is_stored_with_it(tmp_path, dataset_dir):
    url = prepared_database(f"sqlite:///{tmp_path / 'p.db'}", dataset_dir)
    engine = make_sync_engine(url)
    config = PaprecConfig(task_tokens=3, personal_tokens=3, candidates=7, metrics=("HR@5",))
    load_prompt_set(engine, _prompt_file(tmp_path, config, {"u1": ["a", "b", "c"]}, time.time()))
    with Session(engine) as session:
        row = session.scalar(select(PromptSetRow))
    engine.dispose()
    from promptrec.core.repositories.prompts import stored_config

    assert stored_config(row) == config


def test_cli_search_defaults_come_from_the_config_class(monkeypatch):
    from promptrec.cli.main import build_parser

    changed = replace(PaprecConfig(), task_tokens=7, personal_tokens=4, max_cycles=9, seed=3)
    for name in ("task_tokens", "personal_tokens", "max_cycles", "seed"):
        monkeypatch.setattr(PaprecConfig, name, getattr(changed, name))
    args = build_parser().parse_args(["search"])
    assert (args.task_tokens, args.personal_tokens, args.max_cycles, args.seed) == (7, 4, 9, 3)


def test_two_writers_of_one_user_never_collide_on_the_version(dataset_dir):
    """Two real writers (separate connections) write the same user's next version for
    different jobs at the same moment: every write lands, versions 1..N with no gap."""
    writers = 6

    async def write_all(url: str) -> None:
        engines = [make_async_engine(url, pool_size=1) for _ in range(writers)]
        start = asyncio.Event()

        async def write(n: int) -> None:
            async with make_session_factory(engines[n])() as session:
                await start.wait()
                await add_user_prompt(
                    session, SearchedPrompt("u7", "sequential", "fp", [f"w{n}"], job_id=None)
                )
                await session.commit()

        tasks = [asyncio.create_task(write(n)) for n in range(writers)]
        await asyncio.sleep(0.1)
        start.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            for engine in engines:
                await engine.dispose()

    with temporary_postgres_database() as url:
        prepared_database(url, dataset_dir)
        asyncio.run(write_all(url))
        engine = make_sync_engine(url)
        versions = [v for v, _ in _versions(engine, "u7")]
        engine.dispose()
    assert versions == list(range(1, writers + 1))

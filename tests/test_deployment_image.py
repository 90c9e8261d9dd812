"""The Docker image, checked without a Docker engine: every command it runs against the real
CLI, its entrypoint, and the Dockerfile's shape (stages, user, torch, what it copies and what
.dockerignore keeps out)."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import tomllib
from pathlib import Path

import pytest

from promptrec.cli.main import build_parser, main
from promptrec.core.db import migrate
from promptrec.core.settings import get_settings
from tests.support.deployment_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    as_argv,
    compose_raw,
    dockerfile_instructions,
    final_stage,
    image_commands,
)
from tests.support.paths import REPO

PACKAGE_FOLDERS = ("models", "core", "service", "worker", "cli")  # installed as promptrec.*

# ---- every command the image runs exists in the CLI ------------------------------------------


def _params():
    params = []
    for where, argv in image_commands():
        params.append(pytest.param(argv, id=f"{where}: {' '.join(argv)}"))
    return params


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("argv", _params())
def test_every_command_the_image_runs_exists_in_the_cli(argv, capsys):
    parser, words = build_parser(), [a for a in argv if not a.startswith("-")]
    level = parser
    for word in words:
        choices = _subcommands(level)
        if not choices:
            break
        assert word in choices, f"`promptrec {' '.join(argv)}`: no `{word}` in {sorted(choices)}"
        level = choices[word]
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`promptrec {' '.join(argv)}` does not parse: {capsys.readouterr().err}")
    assert hasattr(args, "run"), f"`promptrec {' '.join(argv)}` names no runnable command"


def test_the_image_entrypoint_is_the_promptrec_console_script():
    entrypoints = [json.loads(args) for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints[-1] == ["promptrec"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["promptrec"] == "promptrec.cli:main"
    for name, service in compose_raw()["services"].items():
        assert "entrypoint" not in service, f"{name} overrides the promptrec entrypoint"


def test_the_migrate_command_runs_natively(tmp_path, monkeypatch):
    """What the `migrate` service runs, here on an SQLite file instead of the Postgres container."""
    command = as_argv(compose_raw()["services"]["migrate"]["command"])
    url = f"sqlite:///{tmp_path / 'compose.db'}"
    monkeypatch.setenv("PROMPTREC_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(command) == 0
        assert main(command) == 0  # a restarted one-shot is a no-op
    finally:
        get_settings.cache_clear()
    with sqlite3.connect(tmp_path / "compose.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "users", "items", "user_prompts"} <= tables


# ---- the Dockerfile --------------------------------------------------------------------------


def test_the_dockerfile_is_multi_stage_non_root_and_pins_cpu_torch():
    instructions = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    froms = [args for _, keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2 and all(" AS " in f.upper() for f in froms)
    header_args = {a.split("=")[0]: a for s, k, a in instructions if s == -1 and k == "ARG"}
    assert header_args["BASE_IMAGE"] == "BASE_IMAGE=python:3.11-slim"
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r'--index-url "?\$\{?TORCH_INDEX_URL\}?"? torch==2\.13\.0\b', text)

    last = final_stage()
    users = [args for keyword, args in last if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    copies = [args for keyword, args in last if keyword == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    healthchecks = [args for keyword, args in last if keyword == "HEALTHCHECK"]
    assert healthchecks and "/health/live" in healthchecks[-1]
    cmd = [json.loads(args) for keyword, args in last if keyword == "CMD"]
    assert cmd[-1] == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_the_image_keeps_alembic_ini_where_the_migrate_module_looks_for_it():
    """`promptrec.core.db.migrate` reads alembic.ini two folders above its own file: the builder
    installs the project editable from the folder the runtime stage runs in, and the runtime
    stage copies the code, alembic.ini, migrations/ and the model there."""
    assert Path(migrate.__file__).resolve().parents[2] / "alembic.ini" == migrate.ALEMBIC_INI
    instructions = dockerfile_instructions()
    builder = [(k, a) for s, k, a in instructions if s == 0]
    last = final_stage()
    workdir = [args for keyword, args in last if keyword == "WORKDIR"][-1]
    assert [args for keyword, args in builder if keyword == "WORKDIR"][-1] == workdir
    assert any(k == "RUN" and re.search(r"pip install .*-e \.", a) for k, a in builder)
    env = " ".join(args for keyword, args in last if keyword == "ENV")
    assert "PYTHONPATH" not in env  # the installed package, not a path, finds the code
    targets = {}
    for keyword, args in last:
        if keyword == "COPY" and not args.startswith("--from"):
            parts = [p for p in args.split() if not p.startswith("--")]
            targets[parts[0]] = parts[-1]
    for source in ("alembic.ini", "migrations", "artifacts", *PACKAGE_FOLDERS):
        assert source in targets, f"the runtime stage does not copy {source}"
        assert targets[source] in {"./", f"./{source}", f"{workdir}/{source}", workdir}


def test_the_dockerignore_keeps_secrets_and_local_state_out_but_not_what_the_build_needs():
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "data"} <= patterns
    needed = {"pyproject.toml", "README.md", "alembic.ini", *PACKAGE_FOLDERS}
    needed |= {"migrations", "artifacts"}
    assert not needed & patterns

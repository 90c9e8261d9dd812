"""The deployment files, checked without a Docker engine: docker-compose.yml against the Compose
Specification's JSON schema, every command the image runs against the real CLI, every
`PROMPTREC_*` variable against `promptrec.core.settings.Settings`, and the Dockerfile's shape.

`tests/data/compose-spec.json` is the official Compose Specification schema
(github.com/compose-spec/compose-spec, `schema/compose-spec.json`, Apache-2.0) exactly as Docker
shipped it in the `docker-compose==1.29.2` wheel on PyPI (`compose/config/compose_spec.json`),
the validator docker-compose itself ran. It is a 2021 revision: newer keys (top-level `name`,
`include`, `develop`, `healthcheck.start_interval`, `depends_on.required`) are unknown to it, so
the compose file keeps to what it knows, which every later Compose release accepts. Its custom
formats (`duration`, `ports`) are checked here the way Compose reads them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import sqlite3
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import TypeAdapter

from promptrec.cli.main import build_parser, main
from promptrec.core.db import migrate
from promptrec.core.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PACKAGE_FOLDERS = ("models", "core", "service", "worker", "cli")  # installed as promptrec.*
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

PROMPTREC_IMAGE_SERVICES = ("migrate", "api", "worker", "worker-gpu")
FIELDS = {f"PROMPTREC_{name.upper()}": name for name in Settings.model_fields}


# ---- reading the files ----------------------------------------------------------------------


def env_example() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, active) for `NAME=value` and commented-out `# NAME=value` lines."""
    entries: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            name = match.group(2)
            assert name not in entries, f".env.example sets {name} twice"
            entries[name] = (match.group(3), match.group(1) is None)
    return entries


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, default = match.group("op"), match.group("default") or ""
        value = env.get(name)
        if (op == ":-" and not value) or (op == "-" and value is None):
            return default
        assert value is not None, f"${{{name}}} has no default and no value in .env.example"
        return value

    pattern = (
        r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
        r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    )
    return re.sub(pattern, substitute, text)


def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_resolved() -> dict:
    """The compose file as `docker compose config` sees it with .env from .env.example: YAML
    (anchors and merge keys) first, then substitution in every string value."""
    env = {name: value for name, (value, active) in env_example().items() if active}

    def resolve(node):
        if isinstance(node, dict):
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return resolve(compose_raw())


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments); -1 for ARGs before the first FROM."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    stage, out = -1, []
    for text in logical:
        keyword, _, args = text.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        out.append((stage, keyword.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(stage for stage, _, _ in instructions)
    return [(keyword, args) for stage, keyword, args in instructions if stage == last]


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def image_commands() -> list[tuple[str, list[str]]]:
    """Every argument list the image's `promptrec` entrypoint is given."""
    cmd = [json.loads(args) for keyword, args in final_stage() if keyword == "CMD"]
    commands = [("Dockerfile CMD", cmd[-1])]
    for name, service in compose_raw()["services"].items():
        if name in PROMPTREC_IMAGE_SERVICES and "command" in service:
            commands.append((f"compose {name}", as_argv(service["command"])))
    return commands


# ---- the compose file against the Compose Specification -------------------------------------

GO_DURATION = re.compile(r"[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+|0")
PORT_SPEC = re.compile(
    r"((\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):)?((\d+(-\d+)?)?:)?\d+(-\d+)?(/(tcp|udp|sctp))?"
)
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("duration")
def _duration(value: object) -> bool:
    return not isinstance(value, str) or GO_DURATION.fullmatch(value) is not None


@FORMATS.checks("ports")
def _ports(value: object) -> bool:
    if isinstance(value, int | float):
        return 0 < value < 65536
    return not isinstance(value, str) or PORT_SPEC.fullmatch(value) is not None


def compose_validator() -> jsonschema.Draft4Validator:
    """Draft 4, as docker-compose ran this schema (its `$schema` URL names no known draft)."""
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema, format_checker=FORMATS)


def schema_errors(document: dict) -> list[str]:
    errors = compose_validator().iter_errors(document)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_the_vendored_schema_is_the_official_compose_specification():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert "services" in schema["properties"]


def test_docker_compose_yml_is_valid_against_the_compose_specification():
    assert schema_errors(compose_resolved()) == []


def test_the_schema_check_catches_mistakes():
    """Guards against a vacuous check: each broken copy of the real file is rejected."""
    breakages = {
        "unknown top-level key": lambda c: c.update(servces={}),
        "unknown service key": lambda c: c["services"]["api"].update(comand=["serve"]),
        "bad duration": lambda c: c["services"]["api"]["healthcheck"].update(interval="5 sec"),
        "bad depends_on": lambda c: c["services"]["api"]["depends_on"]["migrate"].update(
            condition="service_done"
        ),
        "bad port": lambda c: c["services"]["api"].update(ports=["eight:8000"]),
        "bad service name": lambda c: c["services"].update({"bad name": {"image": "x"}}),
    }
    for what, breakage in breakages.items():
        document = compose_resolved()
        breakage(document)
        assert schema_errors(document), f"{what} was not caught"


def test_compose_runs_the_services_the_deployment_needs():
    raw, compose = compose_raw(), compose_resolved()
    assert "version" not in raw, "the compose spec has no version key"
    services, volumes = compose["services"], compose["volumes"]
    assert set(services) == {"postgres", "redis", *PROMPTREC_IMAGE_SERVICES}

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert any(v.startswith("pgdata:") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(as_argv(postgres["healthcheck"]["test"]))

    redis = services["redis"]
    assert redis["image"] == "redis:7"
    flags = as_argv(redis["command"])
    assert flags[flags.index("--appendonly") + 1] == "yes"
    assert flags[flags.index("--maxmemory-policy") + 1] == "noeviction"
    assert "redis-cli ping" in " ".join(as_argv(redis["healthcheck"]["test"]))
    assert any(v.startswith("redisdata:") for v in redis["volumes"])

    migrate_service = services["migrate"]
    assert as_argv(migrate_service["command"]) == ["db", "upgrade"]
    assert migrate_service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate_service["restart"] == "no"

    api = services["api"]
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert "/health/ready" in " ".join(as_argv(api["healthcheck"]["test"]))

    assert "profiles" not in services["worker"], "the CPU worker runs by default"
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda")

    for name in PROMPTREC_IMAGE_SERVICES:
        service = services[name]
        assert service["env_file"] == ".env"
        env = service["environment"]
        assert env["PROMPTREC_DATABASE_URL"] == (
            "postgresql+psycopg://promptrec:promptrec@postgres:5432/promptrec"
        )
        assert env["PROMPTREC_REDIS_URL"] == "redis://redis:6379/0"
        mounts = dict(v.split(":", 1)[::-1] for v in service["volumes"])  # target -> source
        model_path = Path(env["PROMPTREC_MODEL_PATH"])
        shared = [t for t in mounts if model_path.is_relative_to(t)]
        assert shared, f"{name}: no volume holds {model_path}"
        assert mounts[shared[0]] == "models"
        if name != "api":
            assert service["healthcheck"] == {"disable": True}, f"{name} serves no HTTP"

    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert used <= set(volumes), f"undeclared volumes: {used - set(volumes)}"


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
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
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


# ---- PROMPTREC_* variables are Settings fields, and .env.example lists them all ---------------


def test_every_promptrec_variable_is_a_settings_field():
    compose_text = COMPOSE_FILE.read_text()
    named = set(re.findall(r"\bPROMPTREC_[A-Z0-9_]+", compose_text))
    named |= {n for n in env_example() if n.startswith("PROMPTREC_")}
    named |= set(re.findall(r"\bPROMPTREC_[A-Z0-9_]+", DOCKERFILE.read_text()))
    unknown = sorted(named - set(FIELDS))
    assert not unknown, f"not fields of Settings: {unknown}"


def test_env_example_has_every_setting_at_its_default_with_a_comment():
    entries = env_example()
    missing = sorted(set(FIELDS) - set(entries))
    assert not missing, f".env.example lacks {missing}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for variable, field_name in FIELDS.items():
        value, active = entries[variable]
        field = Settings.model_fields[field_name]
        if field.default is None:
            assert value == "", f"{variable} has no default: leave it empty and commented out"
            assert not active, f"{variable}= (empty) would not mean unset; comment it out"
        else:
            adapter = TypeAdapter(field.annotation)
            # pydantic-settings reads list settings as JSON.
            parsed = (
                adapter.validate_json(value)
                if value.startswith("[")
                else adapter.validate_python(value)
            )
            assert parsed == field.default, f"{variable}={value}, the default is {field.default}"
        index = next(i for i, line in enumerate(lines) if re.match(rf"#?\s*{variable}=", line))
        assert lines[index - 1].startswith("#") and not re.match(
            r"#\s*[A-Z_]+=", lines[index - 1]
        ), f"{variable} has no comment above it"


def test_env_example_defines_every_variable_compose_substitutes():
    text = COMPOSE_FILE.read_text().replace("$$", "")
    substituted = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    entries = env_example()
    assert substituted <= {n for n, (_, active) in entries.items() if active}
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert entries[name][1], f".env.example must set {name}"


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

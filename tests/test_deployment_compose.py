"""docker-compose.yml, checked without a Docker engine against the Compose Specification's JSON
schema, and the services it runs.

`tests/data/compose-spec.json` is the official Compose Specification schema
(github.com/compose-spec/compose-spec, `schema/compose-spec.json`, Apache-2.0) exactly as Docker
shipped it in the `docker-compose==1.29.2` wheel on PyPI (`compose/config/compose_spec.json`),
the validator docker-compose itself ran. It is a 2021 revision: newer keys (top-level `name`,
`include`, `develop`, `healthcheck.start_interval`, `depends_on.required`) are unknown to it, so
the compose file keeps to what it knows, which every later Compose release accepts. Its custom
formats (`duration`, `ports`) are checked here the way Compose reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema

from tests.support.deployment_files import (
    PROMPTREC_IMAGE_SERVICES,
    as_argv,
    compose_raw,
    compose_resolved,
)
from tests.support.paths import REPO

SCHEMA_FILE = REPO / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

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

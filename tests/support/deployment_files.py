"""The deployment files, parsed as Docker and Compose read them: docker-compose.yml (YAML, then
variable substitution from .env.example), the Dockerfile's instructions by stage, and the
argument lists the image's `promptrec` entrypoint is given."""

from __future__ import annotations

import json
import re
import shlex

import yaml

from tests.support.paths import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"

PROMPTREC_IMAGE_SERVICES = ("migrate", "api", "worker", "worker-gpu")


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

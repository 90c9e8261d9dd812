"""Every `PROMPTREC_*` variable the deployment files name is a field of
`promptrec.core.settings.Settings`, and .env.example lists them all at their defaults."""

from __future__ import annotations

import re

from pydantic import TypeAdapter

from promptrec.core.settings import Settings
from tests.support.deployment_files import COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, env_example

FIELDS = {f"PROMPTREC_{name.upper()}": name for name in Settings.model_fields}


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

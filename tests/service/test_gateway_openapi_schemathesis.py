"""Schemathesis over the OpenAPI spec: generated requests, valid and invalid, never get a 5xx or
an answer that breaks the documented schema (a short run: 25 examples per operation and mode)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi as schemathesis_asgi

from promptrec.cli.gateway import gateway_app
from promptrec.core.settings import Settings
from tests.support.databases import REDIS_URL, prepared_database, temporary_postgres_database
from tests.support.settings import admin_headers, service_settings

# Short by default; set the variable for a deeper run.
EXAMPLES_PER_OPERATION = int(os.environ.get("PROMPTREC_SCHEMATHESIS_EXAMPLES", "25"))
# A schema-valid request may still name items or users the service does not know: that is a
# documented 422 (and `/health/ready` may say 503), not a rejection of valid data. Any body over
# `max_body_bytes` (1 MiB) is refused with 413 before it is read, valid or not: generated
# invalid bodies sometimes grow that large (schemathesis's default list lacks 413).
CONFIG = schemathesis.Config.from_str(
    """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429"]

[checks.negative_data_rejection]
expected-statuses = [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]
"""
)


@pytest.fixture(params=["embedded", "postgres+redis"])
def fresh_settings(request, tmp_path, dataset_dir) -> Iterator[Settings]:
    """Its own database: generated events and users must not touch the other tests' data."""
    if request.param == "embedded":
        yield service_settings(prepared_database(f"sqlite:///{tmp_path / 'api.db'}", dataset_dir))
        return
    with temporary_postgres_database() as url:
        yield service_settings(
            prepared_database(url, dataset_dir),
            redis_url=REDIS_URL,
            # Under the session's prefix (removed with it), apart from the other apps' keys.
            redis_key_prefix=request.getfixturevalue("redis_prefix") + "schemathesis:",
        )


def test_api_conforms_to_its_openapi_spec(lm, fresh_settings):
    app = gateway_app(fresh_settings, lm=lm)
    try:
        failures = _run_schemathesis(app)
    finally:
        # Schemathesis started the app's lifespan; close it before the database goes.
        schemathesis_asgi.shutdown_lifespans()
    assert not failures, "\n\n".join(failures)


def _run_schemathesis(app) -> list[str]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures = []
    cases = [
        (operation, mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    for operation, mode in cases:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case):
            case.call_and_validate(headers=admin_headers())

        try:
            check()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as error:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label} ({mode.value}): {error}")
    return failures

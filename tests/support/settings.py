"""Settings for the app under test: in-process (`Settings`) or as the environment of a
`promptrec` process (`PROMPTREC_*` variables)."""

from __future__ import annotations

import os
from pathlib import Path

from promptrec.core.settings import Settings
from tests.support.paths import REPO

ADMIN_KEY = "test-admin-key-0123456789abcdef"


def service_settings(database_url: str, **overrides) -> Settings:
    values = {
        "database_url": database_url,
        "redis_url": None,
        "admin_api_key": ADMIN_KEY,
        "max_wait_ms": 1.0,
        "request_timeout_ms": 10_000.0,
        "new_user_events": 3,
        "drift_events": 2,
        # The API tests write prompts themselves; the worker has its own tests.
        "embedded_worker": False,
        **overrides,
    }
    return Settings(**values)


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def promptrec_env(**settings) -> dict[str, str]:
    """This process's environment without its `PROMPTREC_*` variables, then `settings` as
    `PROMPTREC_<NAME>` variables: a child process sees only the settings given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREC_")}
    env.update({f"PROMPTREC_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def worker_env(database_url: str, redis_url: str, model_dir: Path, **settings) -> dict[str, str]:
    """Environment of a gateway or worker process with short timeouts, so that tests of failure
    finish in seconds."""
    values = {
        "database_url": database_url,
        "redis_url": redis_url,
        "redis_key_prefix": "worker-test:",
        "model_path": str(model_dir),
        "worker_batch_size": 8,
        "worker_block_ms": 200,
        "worker_heartbeat_s": 0.5,
        "worker_claim_idle_s": 3,
        "worker_max_deliveries": 3,
        "worker_scheduler_interval_s": 1,
        "worker_reconcile_interval_s": 1,
        "worker_reconcile_grace_s": 2,
        "worker_max_backoff_s": 2,
        "log_level": "INFO",
        **settings,
    }
    env = promptrec_env(**values)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONFAULTHANDLER"] = "1"  # a process that dies in C code still leaves a traceback
    return env

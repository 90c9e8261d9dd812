"""The one settings object of the service: every knob is an env var `PROMPTREC_<NAME>`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from promptrec.models.prompts.names import StrategyName

DEFAULT_DATABASE_URL = "sqlite:///data/promptrec.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROMPTREC_", env_file=None, extra="ignore")

    # Storage. Postgres (`postgresql+psycopg://user@host/db`) is the real store; without a URL
    # the service keeps an embedded SQLite file, no server needed.
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(10, ge=1)
    migrate_on_start: bool = True  # run `alembic upgrade head` when the app starts
    # Redis for the hot per-user prompt; None keeps an in-process cache with the same interface.
    redis_url: str | None = None
    redis_key_prefix: str = "promptrec:"
    # How long a cached prompt may be served while the database is down (stale-if-error).
    prompt_cache_ttl_s: int = Field(3600, ge=1)
    # A cached prompt older than this is read again from the database: a lost invalidation
    # (a worker killed between its commit and its invalidation, Redis writes paused) serves an
    # old prompt for at most this long, not for the whole TTL.
    prompt_refresh_s: float = Field(5.0, gt=0)
    # A user's profile and history are cached too (invalidated by event ingestion); this bounds
    # how long a change by another writer (`promptrec db load-dataset`) can go unseen.
    user_context_ttl_s: float = Field(300.0, gt=0)

    # The RLM served and the dataset it was trained on.
    model_path: Path = Path("artifacts/rlm-small")
    data_dir: Path = Path("data/ml-100k")
    device: str | None = None  # cpu, cuda, cuda:1 (default: CUDA when present)
    # CPU threads of the model in `promptrec serve` (default: all cores but one, which the
    # event loop needs; on 2 cores one thread served more requests than two).
    inference_threads: int | None = Field(None, ge=1)

    # Admin routes need this key in X-API-Key; without one they answer 401 to everyone.
    admin_api_key: SecretStr | None = None
    # Client routes (recommendations, events, prompts) need one of these keys in X-API-Key when
    # any is set (comma-separated in the environment); none: open, as the embedded demo runs.
    client_api_keys: Annotated[list[SecretStr], NoDecode] = []
    # Per client key: a token bucket refilled at this rate, holding at most `burst` requests;
    # past it a request is answered 429 with Retry-After. Per API process.
    client_rate_limit_per_s: float = Field(50.0, gt=0)
    client_rate_burst: int = Field(100, ge=1)

    # Micro-batching of ranking requests.
    max_batch_size: int = Field(64, ge=1)
    # 0: a batch goes as soon as the model is free; requests that arrive while it computes
    # form the next batch (waiting for company only adds latency at low load).
    max_wait_ms: float = Field(0.0, ge=0)
    queue_limit: int = Field(1024, ge=1)
    request_timeout_ms: float = Field(2000.0, gt=0)
    retry_after_s: int = Field(1, ge=1)

    # Input limits.
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_events_per_request: int = Field(1000, ge=1)
    max_event_skew_s: int = Field(86_400, ge=0)  # how far in the future an event may lie

    # The prompt strategy the workers search new and drifting users with, and admin jobs use by
    # default (`models.prompts.registry`). The gateway serves whatever a user's current prompt
    # version holds, whichever strategy wrote it.
    strategy: StrategyName = StrategyName.PAPREC
    # RPP choices file (`promptrec search --strategy rpp`): the workers' RPP searches use its
    # policy (next to it) and settings when it was trained on the served model.
    rpp_choices_path: Path = Path("artifacts/prompts/rpp.json")
    # Soft-prompt composer folder (`promptrec search --strategy soft`, composer.json and
    # composer.safetensors): the workers' soft searches compose and fit users with it. Needed
    # when the strategy is soft (else /health/ready says why not) and by admin soft jobs.
    soft_composer_path: Path = Path("artifacts/prompts/soft-composer")

    # What the worker's triggers read: a new user gets a personal search after this many
    # events; a searched user is re-checked for drift after this many new events.
    new_user_events: int = Field(5, ge=1)
    drift_events: int = Field(5, ge=1)

    # Prompt-search workers (`promptrec worker`, or in-process in the gateway without Redis).
    embedded_worker: bool = True  # the API process runs a worker too (off when workers run apart)
    worker_tasks: list[str] = ["sequential"]  # tasks whose users the scheduler keeps searched
    worker_batch_size: int = Field(32, ge=1)  # users per incremental search (XREADGROUP COUNT)
    worker_block_ms: int = Field(1000, ge=1)  # how long one read waits for new messages
    worker_heartbeat_s: float = Field(5.0, gt=0)  # refreshes in-flight messages' idle time
    worker_claim_idle_s: float = Field(60.0, gt=0)  # peers take over messages idle this long
    worker_max_deliveries: int = Field(3, ge=1)  # then the message is dead-lettered
    worker_scheduler_interval_s: float = Field(10.0, gt=0)  # finds new and drifting users
    worker_reconcile_interval_s: float = Field(30.0, gt=0)  # re-enqueues jobs Redis lost
    worker_reconcile_grace_s: float = Field(30.0, ge=0)  # a queued entry younger is left alone
    worker_max_backoff_s: float = Field(
        30.0, gt=0
    )  # ceiling of the retry delay when a store is down

    log_level: str = "INFO"

    @field_validator("client_api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`key1,key2` (or a JSON list) from the environment."""
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()

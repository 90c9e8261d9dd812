"""The tables: users, items, interactions, prompt sets, user prompts, search jobs."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from promptrec.core.db.base import Base, BigId, JsonValue
from promptrec.models.prompts.names import StrategyName

ID_LENGTH = 128
TASK_LENGTH = 32
FINGERPRINT_LENGTH = 64
STRATEGY_LENGTH = 32
DEFAULT_STRATEGY = StrategyName.PAPREC.value


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    age: Mapped[float | None] = mapped_column(Float)
    gender: Mapped[str | None] = mapped_column(String(32))
    occupation: Mapped[str | None] = mapped_column(String(64))
    # What the worker's new-user and drift triggers read; the worker resets
    # events_since_search when it writes the user's prompt.
    event_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    events_since_search: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_event_at: Mapped[int | None] = mapped_column(BigInteger)  # seconds since the epoch
    created_at: Mapped[datetime] = _created()


class Item(Base):
    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    title: Mapped[str] = mapped_column(String(512), default="", server_default="")
    genres: Mapped[str] = mapped_column(String(512), default="", server_default="")  # "|"-joined
    created_at: Mapped[datetime] = _created()


class Interaction(Base):
    __tablename__ = "interactions"
    __table_args__ = (Index("ix_interactions_user_id_timestamp", "user_id", "timestamp"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id", ondelete="CASCADE"))
    timestamp: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch
    rating: Mapped[float | None] = mapped_column(Float)
    recommendation_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = _created()


class PromptSet(Base):
    """Task-level trigger tokens shared by all users, per task and model weights."""

    __tablename__ = "prompt_sets"
    __table_args__ = (UniqueConstraint("task", "model_fingerprint", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(TASK_LENGTH))
    model_fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[list[str]] = mapped_column(JsonValue)
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    # The search settings the set was made with (PaprecConfig as JSON): the workers' personal
    # searches and drift checks use them, so that later searches match the set.
    config: Mapped[dict[str, Any] | None] = mapped_column(JsonValue)
    # When the set was searched (the file's created_at): a file never replaces a newer version.
    searched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()


class JobStatus(StrEnum):
    """A search job's status, and each of its users'."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED_STATUSES = (JobStatus.DONE, JobStatus.FAILED)


class JobScope(StrEnum):
    """Which users a job searches: the ones it names, or the ones a trigger selects."""

    USERS = "users"
    NEW = "new"
    DRIFTING = "drifting"
    ALL = "all"


class JobOutcome(StrEnum):
    """What searching one user of a job decided."""

    PERSONALIZED = "personalized"  # a personal prompt was written
    TASK_LEVEL_KEPT = "task_level_kept"  # personal tokens did not beat the task-level prompt
    PERSONAL_STILL_WINS = "personal_still_wins"  # a drifting user's prompt still fits


class SearchJob(Base):
    __tablename__ = "search_jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task: Mapped[str] = mapped_column(String(TASK_LENGTH))
    scope: Mapped[str] = mapped_column(String(16))  # a JobScope
    # The prompt strategy the job searches with (`models.prompts.registry`).
    strategy: Mapped[str] = mapped_column(
        String(STRATEGY_LENGTH), default=DEFAULT_STRATEGY, server_default=DEFAULT_STRATEGY
    )
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    model_fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    error: Mapped[str | None] = mapped_column(Text)
    # The client's Idempotency-Key (unique): the same key posted again answers this job. The
    # request's hash tells a retry from a different request that reuses the key.
    idempotency_key: Mapped[str | None] = mapped_column(String(ID_LENGTH), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    users: Mapped[list[SearchJobUser]] = relationship(
        back_populates="job", order_by="SearchJobUser.user_id", cascade="all, delete-orphan"
    )


class SearchJobUser(Base):
    """One user of a job: its status and, once searched, the outcome."""

    __tablename__ = "search_job_users"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("search_jobs.job_id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    outcome: Mapped[str | None] = mapped_column(String(32))  # a JobOutcome, once done
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    job: Mapped[SearchJob] = relationship(back_populates="users")


class UserPrompt(Base):
    """A user's prompt for a task, one row per version (rollback marks, never deletes): PAP-REC
    personal tokens (`tokens`), an RPP slot choice (`state`: {slot: alternative}), or soft
    prompt vectors (`vectors`, with what they are in `state`: `core.soft_versions`)."""

    __tablename__ = "user_prompts"
    # (user, task, job) is what makes the worker's write idempotent: a job that is delivered
    # twice writes one version.
    __table_args__ = (
        UniqueConstraint("user_id", "task", "version"),
        UniqueConstraint("user_id", "task", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(TASK_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    model_fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    strategy: Mapped[str] = mapped_column(
        String(STRATEGY_LENGTH), default=DEFAULT_STRATEGY, server_default=DEFAULT_STRATEGY
    )
    tokens: Mapped[list[str]] = mapped_column(JsonValue)
    # rpp: the slot choice, e.g. {"template": "seq-2", "window": "all", "fields": "taste"};
    # soft: n_vectors, template, composer, top components and the fit's metrics.
    state: Mapped[dict[str, Any] | None] = mapped_column(JsonValue)
    # soft: the user's k prompt vectors, little-endian float32 [k, d_model] as
    # `models.prompts.soft.state.vectors_to_bytes` writes them (1 KB for the shipped model).
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary)
    metric_before: Mapped[float | None] = mapped_column(Float)  # task-level prompt on the user
    metric_after: Mapped[float | None] = mapped_column(Float)  # with the personal tokens
    metrics: Mapped[dict[str, Any]] = mapped_column(JsonValue, default=dict)
    searched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("search_jobs.job_id", ondelete="SET NULL")
    )
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()

"""Request and response bodies of the REST API (OpenAPI at /docs)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.registry import strategy_names

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
Identifier = Annotated[
    str,
    Field(pattern=ID_PATTERN, description="1-128 characters: letters, digits and . _ : @ -"),
]
Task = Literal["sequential", "direct"]

# RFC 3339, as JSON Schema's date-time format: a zone is required.
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _parse_date_time(value: object) -> datetime:
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError("expected an RFC 3339 date-time with a zone, e.g. 2024-05-01T12:00:00Z")
    return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))


DateTime = Annotated[datetime, BeforeValidator(_parse_date_time)]


class StrictModel(BaseModel):
    """Request bodies: no unknown fields and no coercion (`"5"` is not a count)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendationRequest(StrictModel):
    task: Task = "sequential"
    count: int = Field(10, ge=1, le=100, description="how many items to return")
    candidates: list[Identifier] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="rank only these known items (required for the direct task, at most 100)",
    )
    history: list[Identifier] | None = Field(
        None, max_length=1000, description="known items, oldest first; replaces the stored history"
    )
    exclude_seen: bool = Field(True, description="leave out items in the history")

    @model_validator(mode="after")
    def _direct_needs_candidates(self) -> RecommendationRequest:
        if self.task == "direct" and not self.candidates:
            raise ValueError("the direct task needs a candidates list")
        if self.task == "direct" and len(self.candidates or []) > 100:
            raise ValueError("the direct task takes at most 100 candidates")
        return self


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="log-probability of the item under the user's prompt")


class PromptInfo(BaseModel):
    version: int = Field(description="the user's prompt version; 0 = the task-level prompt")
    task_version: int = Field(description="the task prompt set version; 0 = the plain template")
    personalized: bool


class RecommendationResponse(BaseModel):
    recommendation_id: str
    items: list[RecommendedItem]
    prompt: PromptInfo
    model: str = Field(description="fingerprint of the served model weights")


class EventIn(StrictModel):
    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    timestamp: int | DateTime = Field(
        description="seconds since the epoch, or an RFC 3339 date-time with a zone"
    )
    recommendation_id: Identifier | None = None


class EventsRequest(StrictModel):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventResult(BaseModel):
    event_id: str
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class SoftComponent(BaseModel):
    component: int = Field(description="the component's index in the composer's pool")
    weight: float = Field(description="its mean composition weight over the user's vectors")


class SoftFit(BaseModel):
    """The fit of the user's vectors: held-out mean log-probability of their last items."""

    before: float | None = Field(description="composed prompt (None: too little history)")
    after: float | None = Field(description="best fitted check")
    kept: bool = Field(description="the fitted change is served (it beat the composition)")
    steps: int = Field(description="gradient steps of the kept check (0: not kept)")


class SoftPromptView(BaseModel):
    """What the user's soft prompt is made of; the vectors themselves are never shown."""

    n_vectors: int = Field(description="vectors added to the template's last words")
    template: str = Field(description="the template they are added to")
    composer: str = Field(description="fingerprint of the composer that composed them")
    components: list[SoftComponent] = Field(
        description="the pool components the user's vectors lean on most"
    )
    fit: SoftFit


class PromptView(BaseModel):
    user_id: str
    task: Task
    strategy: str = Field(
        StrategyName.PAPREC,
        description="the strategy of the user's version: paprec (tokens), rpp or soft",
    )
    text: str = Field(
        description="paprec: task tokens then personal tokens, as the model reads them; rpp: "
        "the chosen sentences, the user's fields and history as placeholders; soft: the "
        "template its vectors are added to, with placeholders"
    )
    task_tokens: list[str]
    personal_tokens: list[str]
    choice: dict[str, str] | None = Field(
        None, description="rpp: the alternative chosen per slot (template, window, fields)"
    )
    choice_text: str | None = Field(None, description="rpp: the chosen sentences as text")
    soft: SoftPromptView | None = Field(None, description="soft: the prompt's make-up and fit")
    version: int
    task_version: int
    personalized: bool
    metric_before: float | None = None
    metric_after: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    searched_at: datetime | None = None
    model: str


class JobCreate(StrictModel):
    task: Task = "sequential"
    user_ids: list[Identifier] | None = Field(None, min_length=1, max_length=10_000)
    scope: Literal["new", "drifting", "all"] | None = None
    strategy: str | None = Field(
        None,
        max_length=32,
        description="the prompt strategy to search with: paprec, rpp or soft (default: the "
        "active one, PROMPTREC_STRATEGY)",
    )

    @model_validator(mode="after")
    def _users_or_scope(self) -> JobCreate:
        if (self.user_ids is None) == (self.scope is None):
            raise ValueError("give exactly one of user_ids and scope")
        if self.strategy is not None and self.strategy not in strategy_names():
            known = ", ".join(strategy_names())
            raise ValueError(f"unknown prompt strategy {self.strategy!r}; known: {known}")
        if self.strategy == StrategyName.RPP and self.task != "sequential":
            raise ValueError("the rpp strategy's slots are sequential prompts: use task sequential")
        return self


class JobCreated(BaseModel):
    job_id: str
    status: str
    task: Task
    scope: str
    strategy: str = StrategyName.PAPREC
    user_count: int


class JobUserView(BaseModel):
    user_id: str
    status: str
    outcome: str | None = None
    error: str | None = None
    attempts: int


class JobView(BaseModel):
    job_id: str
    task: Task
    scope: str
    strategy: str = StrategyName.PAPREC
    status: str
    model: str
    created_at: datetime
    updated_at: datetime
    counts: dict[str, int] = Field(description="users per status")
    users: list[JobUserView]


class Problem(BaseModel):
    detail: Any


class HealthView(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, str] = Field(
        default_factory=dict,
        description="per dependency: ok or down; soft_composer (strategy soft): ok, or why "
        "there is none",
    )

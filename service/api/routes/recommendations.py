"""POST /v1/users/{user_id}/recommendations: rank items for a user with the user's prompt."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from promptrec.core.cached_reads import recommendation_inputs
from promptrec.models.prompts.rendering import UserPrompt
from promptrec.models.user_context import profile_words
from promptrec.service.api.access import CLIENT_RESPONSES, ClientRoute
from promptrec.service.api.deps import RuntimeDep
from promptrec.service.api.schemas import (
    ID_PATTERN,
    Problem,
    PromptInfo,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
)
from promptrec.service.inference import RankRequest, prompt_tokens, soft_row

router = APIRouter(
    prefix="/v1/users",
    tags=["recommendations"],
    route_class=ClientRoute,
    responses=CLIENT_RESPONSES,
)

UserId = Annotated[str, Path(pattern=ID_PATTERN, description="the user's id")]


def _indices(index_of: dict[str, int], item_ids: list[str], what: str) -> list[int]:
    unknown = [i for i in item_ids if i not in index_of]
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown items in {what}: {', '.join(sorted(set(unknown))[:20])}",
        )
    return [index_of[i] for i in item_ids]


@router.post(
    "/{user_id}/recommendations",
    response_model=RecommendationResponse,
    responses={
        422: {"model": Problem, "description": "invalid input or unknown items"},
        429: {"model": Problem, "description": "queue full; retry after Retry-After seconds"},
        503: {"model": Problem, "description": "deadline exceeded"},
    },
)
async def recommend(
    user_id: UserId, body: RecommendationRequest, runtime: RuntimeDep
) -> RecommendationResponse:
    """Top `count` items for the user. A user never seen before is recorded and gets the
    task-level prompt; `history` replaces the stored history; `candidates` must be known."""
    catalog = runtime.catalog
    history = (
        _indices(catalog.index_of, body.history, "history") if body.history is not None else None
    )
    candidates = (
        _indices(catalog.index_of, body.candidates, "candidates") if body.candidates else None
    )
    prompt, user = await recommendation_inputs(
        runtime.sessions,
        runtime.cache,
        user_id,
        body.task,
        runtime.fingerprint,
        runtime.settings.user_context_ttl_s,
        runtime.settings.prompt_refresh_s,
    )
    if history is None:
        # Items the database has but the model was not trained on cannot be shown to it.
        history = [k for k in map(catalog.index_of.get, user.history) if k is not None]
    tokens = prompt_tokens(
        runtime.lm,
        catalog,
        body.task,
        history,
        profile_words(user.age, user.gender, user.occupation),
        UserPrompt(prompt.task_tokens, prompt.personal_tokens),
        candidates or (),
        rpp_choice=prompt.rpp_choice,
        soft_template=prompt.soft.template if prompt.soft is not None else None,
    )
    request = RankRequest(
        tokens=tokens,
        count=body.count,
        exclude=tuple(history) if body.exclude_seen else (),
        candidates=tuple(candidates) if candidates is not None else None,
        soft=(
            soft_row(runtime.lm, tokens, len(history), prompt.soft.vectors)
            if prompt.soft is not None
            else None
        ),
    )
    ranked = await runtime.batcher.submit(request, runtime.settings.request_timeout_ms / 1000)
    return RecommendationResponse(
        recommendation_id=uuid.uuid4().hex,
        items=[
            RecommendedItem(item_id=catalog.item_ids[i], title=catalog.titles[i], score=s)
            for i, s in zip(ranked.items, ranked.scores, strict=True)
        ],
        prompt=PromptInfo(
            version=prompt.version,
            task_version=prompt.task_version,
            personalized=prompt.personalized,
        ),
        model=runtime.fingerprint,
    )

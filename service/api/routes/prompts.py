"""GET /v1/users/{user_id}/prompt: the prompt a user is served for a task."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from promptrec.core.cached_reads import ServedPrompt, served_prompt
from promptrec.core.repositories import users
from promptrec.models.prompts.names import StrategyName
from promptrec.models.prompts.rpp.slots import choice_from_names, choice_text
from promptrec.models.templates import TEMPLATES
from promptrec.service.api.access import CLIENT_RESPONSES, ClientRoute
from promptrec.service.api.deps import RuntimeDep, SessionDep
from promptrec.service.api.runtime import Runtime
from promptrec.service.api.schemas import (
    ID_PATTERN,
    Problem,
    PromptView,
    SoftComponent,
    SoftFit,
    SoftPromptView,
    Task,
)

router = APIRouter(
    prefix="/v1/users",
    tags=["prompts"],
    route_class=ClientRoute,
    responses=CLIENT_RESPONSES,
)

UserId = Annotated[str, Path(pattern=ID_PATTERN, description="the user's id")]
TaskQuery = Annotated[Task, Query(description="sequential or direct")]


def soft_view(state: dict[str, Any]) -> SoftPromptView:
    """A soft version's state as shown (`core.soft_versions.soft_state`)."""
    return SoftPromptView(
        n_vectors=state["n_vectors"],
        template=state["template"],
        composer=state["composer"],
        components=[SoftComponent(component=i, weight=w) for i, w in state["components"]],
        fit=SoftFit(
            before=state["before"], after=state["after"], kept=state["kept"], steps=state["steps"]
        ),
    )


def prompt_view(runtime: Runtime, user_id: str, task: str, prompt: ServedPrompt) -> PromptView:
    choice = prompt.rpp_choice
    soft = prompt.state if prompt.strategy == StrategyName.SOFT else None
    sentences = choice_text(choice_from_names(choice)) if choice is not None else None
    template = TEMPLATES[soft["template"]].text if soft is not None else None
    # An RPP choice or a soft prompt replaces the task's prompt: the task tokens are not part of
    # the user's prompt.
    task_tokens = list(prompt.task_tokens) if choice is None and soft is None else []
    return PromptView(
        user_id=user_id,
        task=task,
        strategy=prompt.strategy,
        text=sentences or template or " ".join((*task_tokens, *prompt.personal_tokens)),
        task_tokens=task_tokens,
        personal_tokens=list(prompt.personal_tokens),
        choice=dict(choice) if choice is not None else None,
        choice_text=sentences,
        soft=soft_view(soft) if soft is not None else None,
        version=prompt.version,
        task_version=prompt.task_version,
        personalized=prompt.personalized,
        metric_before=prompt.metric_before,
        metric_after=prompt.metric_after,
        metrics=prompt.metrics,
        searched_at=prompt.searched_at,
        model=runtime.fingerprint,
    )


@router.get(
    "/{user_id}/prompt",
    response_model=PromptView,
    responses={404: {"model": Problem, "description": "unknown user"}},
)
async def get_prompt(
    user_id: UserId, task: TaskQuery, runtime: RuntimeDep, session: SessionDep
) -> PromptView:
    if await users.get_user(session, user_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown user {user_id}")
    return await served_prompt_view(runtime, session, user_id, task)


async def served_prompt_view(
    runtime: Runtime, session: AsyncSession, user_id: str, task: str
) -> PromptView:
    """What the user is served for the task now (through the cache)."""
    prompt = await served_prompt(
        session,
        runtime.cache,
        user_id,
        task,
        runtime.fingerprint,
        runtime.settings.prompt_refresh_s,
    )
    return prompt_view(runtime, user_id, task, prompt)

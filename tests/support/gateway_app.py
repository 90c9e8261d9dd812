"""The in-process app under test (a TestClient with its lifespan running) and what the API
tests do to it: run a coroutine on its loop, write prompts as the worker would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastapi.testclient import TestClient

from promptrec.core.settings import Settings
from tests.support.processes import wait_for
from tests.support.settings import admin_headers


@dataclass
class Service:
    mode: str
    client: TestClient
    settings: Settings

    @property
    def runtime(self):
        return self.client.app.state.runtime


def run_async(service: Service, function, *args):
    """Run `await function(*args)` on the app's own event loop."""
    return service.client.portal.call(function, *args)


async def write_user_prompt(runtime, user_id: str, task: str, tokens: list[str]) -> int:
    """What the worker will do: commit a new version, then invalidate the cached prompt."""
    from promptrec.core.cached_reads import invalidate_user_prompt
    from promptrec.core.repositories.prompts import SearchedPrompt, add_user_prompt

    async with runtime.sessions() as session:
        row = await add_user_prompt(
            session,
            SearchedPrompt(user_id, task, runtime.fingerprint, tokens, 0.25, 0.5, {"ndcg@10": 0.5}),
        )
        await session.commit()
    await invalidate_user_prompt(runtime.cache, runtime.fingerprint, task, user_id)
    return row.version


async def write_task_prompt(runtime, task: str, tokens: list[str]) -> int:
    from promptrec.core.cached_reads import invalidate_task_prompt
    from promptrec.core.repositories.prompts import add_prompt_set

    async with runtime.sessions() as session:
        row = await add_prompt_set(session, task, runtime.fingerprint, tokens, {"ndcg@10": 0.3})
        await session.commit()
    await invalidate_task_prompt(runtime.cache, runtime.fingerprint, task)
    return row.version


def new_user_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def finished_admin_job(client: TestClient, body: dict, timeout_s: float) -> tuple[dict, dict]:
    """Post an admin prompt-search job and wait until it is done: (the 202 answer's body, the
    finished job)."""
    created = client.post("/v1/admin/prompt-search-jobs", json=body, headers=admin_headers())
    assert created.status_code == 202, created.text
    job_url = f"/v1/admin/prompt-search-jobs/{created.json()['job_id']}"

    def done() -> bool:
        return client.get(job_url, headers=admin_headers()).json()["status"] == "done"

    wait_for(done, timeout_s, f"the {body.get('strategy', 'default')} job to finish")
    return created.json(), client.get(job_url, headers=admin_headers()).json()

"""Replay held-out cold users against a running service, as a real client would.

For each cold user of the dataset (never seen in RLM training) a fresh user id is created:
1. *before*: recommendations with the user's history passed in the request (the task-level
   prompt: the user has no personal prompt yet);
2. the same history is posted as events; the worker's new-user trigger searches the user;
3. *after*: once the user's prompt shows a search, recommendations from the stored history.
The only difference between before and after is the personal prompt, and both are scored on
the user's held-out test item (HR@10, NDCG@10). Used by `promptrec demo`, `bench/worker.py`
and the end-to-end test.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import make_splits

TASK = "sequential"


@dataclass(frozen=True)
class ReplayUser:
    user_id: str  # fresh id on the service
    source_user: str  # the dataset's user
    history: list[str]  # training + validation items, oldest first
    test_item: str


def cold_users(data_dir: Path, count: int | None = None, seed: int = 0) -> list[ReplayUser]:
    """The dataset's cold users (the splits' seeded 20%), `count` of them in a seeded order."""
    data = InteractionData.load(data_dir)
    splits = make_splits(data)
    cold = splits.user_indices("cold")
    order = np.random.default_rng(seed).permutation(len(cold))
    run = uuid.uuid4().hex[:6]
    out = []
    for u in cold[order][:count]:
        items = [splits.item_ids[i] for i in [*splits.train[u], splits.valid[u]]]
        out.append(
            ReplayUser(
                f"demo-{run}-{splits.users[u]}",
                splits.users[u],
                items,
                splits.item_ids[splits.test[u]],
            )
        )
    return out


def _scores(items: list[str], target: str, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of the target in a returned list."""
    if target in items[:k]:
        return 1.0, 1.0 / math.log2(items.index(target) + 2)
    return 0.0, 0.0


@dataclass
class ReplayResult:
    user: ReplayUser
    hr_before: float = 0.0
    ndcg_before: float = 0.0
    hr_after: float = 0.0
    ndcg_after: float = 0.0
    items_before: list[str] = field(default_factory=list)
    items_after: list[str] = field(default_factory=list)
    personalized: bool = False
    personal_tokens: str = ""
    searched: bool = False
    posted_at: float = 0.0  # epoch seconds, when the client started posting the events
    searched_at: float | None = None  # epoch seconds, the server's searched_at of the prompt
    error: str | None = None


RETRIES = 5


async def _send(client: httpx.AsyncClient, method: str, url: str, **kwargs) -> httpx.Response:
    """As a well-behaved client: a 429 or 503 (the API is saturated) is retried after its
    Retry-After (1 s without one), a few times."""
    for _ in range(RETRIES):
        response = await client.request(method, url, **kwargs)
        if response.status_code not in (429, 503):
            break
        await asyncio.sleep(float(response.headers.get("retry-after", 1)))
    response.raise_for_status()
    return response


async def _recommend(client: httpx.AsyncClient, user: ReplayUser, history: list[str] | None):
    body: dict = {"task": TASK, "count": 10, "exclude_seen": True}
    if history is not None:
        body["history"] = history
    response = await _send(client, "POST", f"/v1/users/{user.user_id}/recommendations", json=body)
    return response.json()


async def _post_events(client: httpx.AsyncClient, user: ReplayUser, batch: int = 500) -> None:
    start = int(time.time()) - len(user.history) - 60
    events = [
        {
            "event_id": f"{user.user_id}-{k}",
            "user_id": user.user_id,
            "item_id": item,
            "timestamp": start + k,
        }
        for k, item in enumerate(user.history)
    ]
    for lo in range(0, len(events), batch):
        response = await _send(
            client, "POST", "/v1/events", json={"events": events[lo : lo + batch]}
        )
        rejected = [r for r in response.json()["results"] if r["status"] == "rejected"]
        if rejected:
            raise RuntimeError(f"events rejected for {user.user_id}: {rejected[:3]}")


async def replay_user(
    client: httpx.AsyncClient, user: ReplayUser, timeout_s: float, poll_s: float
) -> ReplayResult:
    """One user, before and after. The search time is the server's (`searched_at`), so how
    often the client polls for it changes only the load on the API, not the figure."""
    result = ReplayResult(user)
    try:
        before = await _recommend(client, user, user.history)
        result.items_before = [i["item_id"] for i in before["items"]]
        result.hr_before, result.ndcg_before = _scores(result.items_before, user.test_item)
        result.posted_at = time.time()
        await _post_events(client, user)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = await _send(
                client, "GET", f"/v1/users/{user.user_id}/prompt", params={"task": TASK}
            )
            prompt = response.json()
            if prompt["version"] > 0:  # a search has written the user's prompt
                result.searched = True
                result.searched_at = datetime.fromisoformat(prompt["searched_at"]).timestamp()
                result.personalized = prompt["personalized"]
                result.personal_tokens = " ".join(prompt["personal_tokens"])
                break
            await asyncio.sleep(poll_s)
        after = await _recommend(client, user, None)
        result.items_after = [i["item_id"] for i in after["items"]]
        result.hr_after, result.ndcg_after = _scores(result.items_after, user.test_item)
    except (httpx.HTTPError, RuntimeError, KeyError) as error:
        result.error = f"{type(error).__name__}: {error}"
    return result


async def replay(
    url: str,
    users: list[ReplayUser],
    timeout_s: float = 300.0,
    concurrency: int = 16,
    poll_s: float = 0.5,
    api_key: str | None = None,
) -> list[ReplayResult]:
    limit = asyncio.Semaphore(concurrency)
    headers = {"X-API-Key": api_key} if api_key else {}  # a client key, where one is required
    async with httpx.AsyncClient(base_url=url, timeout=60.0, headers=headers) as client:

        async def one(user: ReplayUser) -> ReplayResult:
            async with limit:
                return await replay_user(client, user, timeout_s, poll_s)

        return list(await asyncio.gather(*(one(u) for u in users)))


def summary(results: list[ReplayResult]) -> dict:
    ok = [r for r in results if r.error is None]
    searched = [r for r in ok if r.searched]
    out = {
        "n": len(ok),
        "searched": len(searched),
        "personalized": sum(r.personalized for r in ok),
        "errors": len(results) - len(ok),
        "HR@10_before": _mean([r.hr_before for r in ok]),
        "HR@10_after": _mean([r.hr_after for r in ok]),
        "NDCG@10_before": _mean([r.ndcg_before for r in ok]),
        "NDCG@10_after": _mean([r.ndcg_after for r in ok]),
    }
    if searched:
        first = min(r.posted_at for r in searched)
        last = max(r.searched_at for r in searched if r.searched_at is not None)  # all set
        out["seconds"] = round(last - first, 2)
        out["users_per_min"] = round(len(searched) / max(last - first, 1e-9) * 60, 1)
    return out


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 5) if values else float("nan")


def table(results: list[ReplayResult], examples: int = 5) -> str:
    s = summary(results)
    lines = [
        f"cold users replayed: {s['n']} (searched {s['searched']}, personalized "
        f"{s['personalized']}, errors {s['errors']})",
        "",
        "             before   after   (test item, full ranking, top 10)",
        f"  HR@10      {s['HR@10_before']:.4f}   {s['HR@10_after']:.4f}",
        f"  NDCG@10    {s['NDCG@10_before']:.4f}   {s['NDCG@10_after']:.4f}",
    ]
    if "users_per_min" in s:
        lines.append(f"\nend-to-end: {s['users_per_min']} users/min (events in -> prompt written)")
    shown = [r for r in results if r.personalized][:examples]
    if shown:
        lines.append("\npersonal tokens (after the task-level tokens):")
        lines += [f"  {r.user.user_id:<24} {r.personal_tokens}" for r in shown]
    failed = [r for r in results if r.error][:3]
    lines += [f"  error {r.user.user_id}: {r.error}" for r in failed]
    return "\n".join(lines)

"""How the worker waits and retries: backoff after an outage, bounded waits on events, and
isolating the user whose search fails from the rest of the batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Backoff:
    """0.5 s, 1 s, 2 s, ... up to `ceiling`; `reset` after a success."""

    def __init__(self, ceiling: float, first: float = 0.5) -> None:
        self.ceiling, self.first, self.failures = ceiling, first, 0

    def next(self) -> float:
        self.failures += 1
        return min(self.ceiling, self.first * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


async def set_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; True when it is set. asyncio.timeout rather than
    asyncio.wait_for, which on Python 3.11 can lose a cancel that arrives as the wait ends."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


def isolating(compute: Callable[[list], dict], users: list) -> tuple[dict, dict[str, str]]:
    """`compute(users)`; when it raises, each half again, down to the user that fails: one
    poison user must not fail the others. Returns (results, errors by user id)."""
    if not users:
        return {}, {}
    try:
        return compute(users), {}
    except Exception as error:
        if len(users) == 1:
            return {}, {users[0].user_id: f"{type(error).__name__}: {error}"}
    half = len(users) // 2
    first, first_errors = isolating(compute, users[:half])
    second, second_errors = isolating(compute, users[half:])
    return {**first, **second}, {**first_errors, **second_errors}

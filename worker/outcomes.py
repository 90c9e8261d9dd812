"""What every strategy's batch goes through in the worker (synchronous, run in a thread): users
that cannot be searched fail at once, drifting users whose prompt still wins keep it, the rest
are searched in one batched call; one user's failure is isolated from the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from promptrec.core.db.tables import JobOutcome, JobScope
from promptrec.core.queue import SearchTask
from promptrec.core.repositories.jobs import Outcome, WorkItem
from promptrec.core.repositories.users import UserData
from promptrec.worker.retry import isolating
from promptrec.worker.searcher import DriftCheck, NotEnoughHistory

Result = TypeVar("Result")
Key = tuple[str, str]


def batch_outcomes(
    batch: list[SearchTask],
    items: dict[Key, WorkItem],
    users: dict[str, UserData],
    check: Callable[[UserData], object],
    drift: Callable[[list[UserData]], dict[str, DriftCheck]],
    search: Callable[[list[UserData]], dict[str, Result]],
    outcome: Callable[[SearchTask, Result], Outcome],
) -> tuple[list[Outcome], dict[Key, str], set[Key]]:
    """`check` raises NotEnoughHistory for a user the search cannot run on; `drift` checks the
    drifting users' current prompts; `search` searches the rest; `outcome` turns a user's result
    into what is written. Returns the outcomes, the errors by (job, user), and which errors are
    final (a retry cannot succeed)."""
    errors: dict[Key, str] = {}
    final: set[Key] = set()
    by_user: dict[str, SearchTask] = {}
    for s in batch:
        user = users.get(s.user_id)
        if user is None:
            errors[s.key] = f"user {s.user_id} no longer exists"
            final.add(s.key)
            continue
        try:
            check(user)
        except NotEnoughHistory as error:
            errors[s.key] = f"{type(error).__name__}: {error}"
            final.add(s.key)
            continue
        by_user[s.user_id] = s
    drifting = [users[u] for u, s in by_user.items() if items[s.key].scope == JobScope.DRIFTING]
    checks, check_errors = isolating(drift, drifting)
    outcomes = [
        Outcome(by_user[u], JobOutcome.PERSONAL_STILL_WINS, None)
        for u, c in checks.items()
        if c.personal_wins
    ]
    settled = {o.search.user_id for o in outcomes} | set(check_errors)
    results, search_errors = isolating(search, [users[u] for u in by_user if u not in settled])
    outcomes += [outcome(by_user[u], result) for u, result in results.items()]
    for user_id, message in {**check_errors, **search_errors}.items():
        errors[by_user[user_id].key] = message
    return outcomes, errors, final

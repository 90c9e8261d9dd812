"""The worker's compute: drift checks and batched incremental PAP-REC searches (synchronous,
run in a thread; knows nothing of Redis or the database)."""

from __future__ import annotations

from dataclasses import dataclass

from promptrec.core.repositories.users import UserData
from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import UserOutcome
from promptrec.models.prompts.selection import SearchExamples, build_examples
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields
from promptrec.models.user_context import ItemCatalog, profile_words

MIN_HISTORY = 2  # one item to predict from at least one before it
MAX_DRIFT_EVENTS = 50  # a drift check scores at most this many recent events


class NotEnoughHistory(ValueError):
    """The user has too few interactions with items the model knows to search on. Retrying
    cannot help (until new events arrive, which schedule a new job): the search fails at once."""


@dataclass(frozen=True)
class DriftCheck:
    task_level: float
    personal: float

    @property
    def personal_wins(self) -> bool:
        return self.personal > self.task_level


def known_history(catalog: ItemCatalog, user: UserData) -> list[int]:
    """The user's history as item indices; raises `NotEnoughHistory` when too short."""
    # Items added after the model was trained have no token: the model cannot read them.
    index_of = catalog.index_of
    history = [index_of[i] for i in user.history if i in index_of]
    if len(history) < MIN_HISTORY:
        raise NotEnoughHistory(
            f"user {user.user_id} has {len(history)} interactions with items the model "
            f"knows; a search needs at least {MIN_HISTORY}"
        )
    return history


def user_profile(user: UserData) -> list[str]:
    return profile_words(user.age, user.gender, user.occupation)


def user_examples(
    catalog: ItemCatalog, users: list[UserData], per_user: int, held_out: int
) -> SearchExamples:
    """Selection examples of the users' known histories: each of their last `per_user` items
    with the history before it, the last `held_out` of them held out."""
    return build_examples(
        [u.user_id for u in users],
        [known_history(catalog, u) for u in users],
        [user_profile(u) for u in users],
        catalog,
        per_user,
        held_out,
    )


def current_fields(catalog: ItemCatalog, user: UserData) -> PromptFields:
    """The user's prompt fields now: their whole known history, profile and taste words."""
    history = known_history(catalog, user)
    return PromptFields(history, user_profile(user), catalog.taste_words(history))


class PersonalSearcher:
    def __init__(self, lm: RecLM, catalog: ItemCatalog, config: PaprecConfig | None = None) -> None:
        self.config = config or PaprecConfig()
        self.search = PaprecSearch(lm, self.config, progress=False)
        self.catalog = catalog

    def check(self, user: UserData) -> None:
        """Raises `NotEnoughHistory` for a user the search cannot run on."""
        known_history(self.catalog, user)

    def _examples(self, users: list[UserData], per_user: int, held_out: int) -> SearchExamples:
        return user_examples(self.catalog, users, per_user, held_out)

    def drift(self, users: list[UserData], task_tokens: list[str]) -> dict[str, DriftCheck]:
        """Task-level vs personal prompt on each user's events since their last search. A user
        without personal tokens has nothing to defend (the check says search); any number of
        personal tokens is checked as it is, whatever the set's current width."""
        checkable = [u for u in users if u.personal_tokens]
        out = {u.user_id: DriftCheck(0.0, 0.0) for u in users if not u.personal_tokens}
        for (recent, _width), group in _by_recent(checkable).items():
            examples = self._examples(group, recent, 0)
            before, after = self.search.compare_personal(
                examples, task_tokens, [u.personal_tokens for u in group]
            )
            for u, user in enumerate(group):
                out[user.user_id] = DriftCheck(float(before[u]), float(after[u]))
        return out

    def personal(self, users: list[UserData], task_tokens: list[str]) -> dict[str, UserOutcome]:
        """One batched incremental search (task tokens frozen) for these users."""
        examples = self._examples(
            users, self.config.selection_per_user, self.config.held_out_per_user
        )
        return self.search.search_personal(examples, task_tokens)


def _by_recent(users: list[UserData]) -> dict[tuple[int, int], list[UserData]]:
    """Users grouped by how many recent events their drift check scores (at least one) and by
    their number of personal tokens (one batched comparison takes one width)."""
    groups: dict[tuple[int, int], list[UserData]] = {}
    for u in users:
        recent = min(max(1, u.events_since_search), MAX_DRIFT_EVENTS)
        groups.setdefault((recent, len(u.personal_tokens)), []).append(u)
    return groups

"""Prompt strategies are found by name, and PAP-REC keeps the strategy protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from paprec_testing import CONFIG

from promptrec.models.metrics import metric
from promptrec.models.prompts.paprec.state import PaprecState
from promptrec.models.prompts.paprec.strategy import PaprecStrategy
from promptrec.models.prompts.protocol import PromptStrategy
from promptrec.models.prompts.registry import get_strategy, register, strategy_names
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.ranking import item_scorer


def test_paprec_is_registered_by_its_name():
    assert "paprec" in strategy_names()
    assert get_strategy("paprec") is PaprecStrategy
    register("paprec", PaprecStrategy)  # the same factory again changes nothing
    assert get_strategy("paprec") is PaprecStrategy


def test_an_unknown_strategy_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown prompt strategy 'lora'; known: .*paprec"):
        get_strategy("lora")


def test_a_name_cannot_be_taken_by_another_strategy():
    with pytest.raises(ValueError, match="already registered"):
        register("paprec", lambda lm, config=None: None)
    assert get_strategy("paprec") is PaprecStrategy


def _surrogate_of_encoded(strategy, state, examples, user: int) -> float:
    """The task surrogate of `user`'s search examples, each encoded by the strategy and ranked
    independently of the search."""
    rows = [j for j in examples.subset(held_out=False) if examples.owner[j] == user]
    batch = strategy.encode(
        state, [examples.users[user]] * len(rows), [examples.fields[j] for j in rows]
    )
    with torch.no_grad():
        logits = item_scorer(strategy.lm)(batch.input_ids, batch.attention_mask).float()
    for r, j in enumerate(rows):
        seen = [i for i in examples.fields[j].history if i != examples.targets[j]]
        logits[r, seen] = float("-inf")
    targets = torch.tensor([examples.targets[j] for j in rows])
    ranks = ((logits >= logits.gather(1, targets[:, None])).sum(1) - 1).numpy()
    return float(np.mean(sum(metric(m, ranks) for m in CONFIG.metrics)))


def test_paprec_strategy_searches_users_then_encodes_what_it_found(lm, examples):
    strategy = get_strategy("paprec")(lm, CONFIG)
    assert isinstance(strategy, PromptStrategy) and strategy.name == "paprec"
    start = strategy.initial_state()
    assert start.task_tokens == [CONFIG.init_token] * CONFIG.task_tokens

    state = strategy.search(examples, start)
    assert start == PaprecState(task_tokens=[CONFIG.init_token] * CONFIG.task_tokens)
    assert state.task_complete and set(state.outcomes) == set(examples.users)
    kept = [u for u, user in enumerate(examples.users) if user in state.personal]
    assert kept  # some users keep personal tokens here, so the test shows them encoded

    # Each kept user's prompt, encoded by the strategy, scores what the search measured.
    for u in kept:
        outcome = state.outcomes[examples.users[u]]
        assert _surrogate_of_encoded(strategy, state, examples, u) == pytest.approx(
            outcome.surrogate_after, abs=1e-5
        )

    # Only users with their own state get it; anyone else gets the task-level prompt.
    u, fields = kept[0], examples.fields[:1] * 2
    task_level = PaprecState(task_tokens=state.task_tokens)
    users = [examples.users[u], "someone-unsearched"]
    ours, plain = strategy.encode(state, users, fields), strategy.encode(task_level, users, fields)
    assert ours.input_ids.shape[0] == 2 and ours.attention_mask.shape == ours.input_ids.shape

    def prompt(batch, row):
        return batch.input_ids[row][batch.attention_mask[row].bool()].tolist()

    assert prompt(ours, 0) != prompt(plain, 0)
    assert prompt(ours, 1) == prompt(plain, 1)

    # Searching some users again leaves every other user's state as it was.
    some = _examples_of_first_users(examples, 6)
    again = strategy.search(some, state)
    assert again.task_tokens == state.task_tokens
    for user in examples.users[6:]:
        assert again.outcomes[user] == state.outcomes[user]
        assert again.personal.get(user) == state.personal.get(user)


def _examples_of_first_users(examples: SearchExamples, n: int) -> SearchExamples:
    rows = [j for j, owner in enumerate(examples.owner) if owner < n]
    return SearchExamples(
        users=examples.users[:n],
        owner=[examples.owner[j] for j in rows],
        fields=[examples.fields[j] for j in rows],
        targets=[examples.targets[j] for j in rows],
        held_out=[examples.held_out[j] for j in rows],
    )

"""RPP: slots the RLM was trained on, a policy that learns, selection items from training only,
files that round-trip, the strategy found by name, and the command line on a tiny model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from promptrec.cli.main import main
from promptrec.models.data.splits import Splits
from promptrec.models.prompts.protocol import PromptStrategy
from promptrec.models.prompts.registry import get_strategy, strategy_names
from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.pipeline import run_rpp_search
from promptrec.models.prompts.rpp.policy import train_policy
from promptrec.models.prompts.rpp.slots import (
    DEFAULT_CHOICE,
    SLOTS,
    all_choices,
    choice_from_label,
    choice_label,
    choice_names,
    render_choice,
)
from promptrec.models.prompts.rpp.state import RppPromptSet, RppState
from promptrec.models.prompts.rpp.strategy import RppStrategy
from promptrec.models.prompts.selection import training_examples
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, PromptFields, render_parts, templates_for
from promptrec.models.text import item_token
from promptrec.models.user_context import ItemCatalog, user_profiles

# A run small enough for a test: a few updates, a short refinement.
SMALL = RppConfig(iterations=6, batch_users=16, hidden=8, check_every=3, refine_episodes=2)
FIELDS = PromptFields(list(range(30)), ["twenties", "female", "artist"], ["drama", "comedy"])


# ---- slots ------------------------------------------------------------------------------------
def test_every_slot_alternative_is_one_the_rlm_was_trained_with():
    """Templates: the ones the training corpus draws; fields: the ones it drops at random;
    windows: histories no longer than the model's."""
    assert SLOTS[0].alternatives == tuple(t.name for t in templates_for("sequential"))
    assert {s.name for s in SLOTS} == {"template", "window", "fields"}  # no instruction slot
    for choice in all_choices():
        assert choice_from_label(choice_label(choice)) == choice
        names = choice_names(choice)
        tokens = render_choice(choice, FIELDS, max_history=20)
        profile = FIELDS.profile if "profile" in names["fields"] else []
        taste = FIELDS.taste if "taste" in names["fields"] else []
        # The prefix is exactly what training renders for a row with these fields dropped.
        trained_prefix, _ = render_parts(
            TEMPLATES[names["template"]], PromptFields([], profile, taste), 0
        )
        window = 20 if names["window"] == "all" else min(int(names["window"]), 20)
        history = [item_token(i) for i in FIELDS.history[-window:]]
        assert tokens == [*trained_prefix, *history]


def test_the_default_choice_renders_the_served_prompt():
    served = render_parts(TEMPLATES["seq-1"], FIELDS, 200)
    assert render_choice(DEFAULT_CHOICE, FIELDS, 200) == [*served[0], *served[1]]
    assert len(all_choices()) == 4 * 5 * 4


def test_a_choice_outside_the_slots_is_refused():
    with pytest.raises(ValueError, match="one alternative per slot"):
        render_choice((0, 9, 0), FIELDS, 20)


# ---- policy -----------------------------------------------------------------------------------
def test_the_policy_learns_the_choice_that_pays_for_each_kind_of_user():
    """Synthetic: users with state[0] > 0 are paid for template 1, the others for template 3,
    and everyone for window 2; nothing else matters."""
    rng = np.random.default_rng(0)
    states = torch.as_tensor(rng.normal(size=(200, 6)), dtype=torch.float32)
    best_template = np.where(states[:, 0].numpy() > 0, 1, 3)

    def reward(users: np.ndarray, choices: list) -> np.ndarray:
        c = np.array(choices)
        return (c[:, 0] == best_template[users]) * 1.0 + (c[:, 1] == 2) * 0.5

    config = RppConfig(iterations=150, batch_users=64, hidden=16, lr=0.02, check_every=10)
    policy, log = train_policy(states, reward, config, progress=False)
    everyone = np.arange(len(states))
    before = reward(everyone, [DEFAULT_CHOICE] * len(states)).mean()
    after = reward(everyone, policy.choose(states)).mean()
    assert after > before + 1.0 and after >= 1.4
    assert np.mean(log.mean_reward[-20:]) > np.mean(log.mean_reward[:20])
    assert log.best_iteration > 0 and log.check_reward[0][0] == 0
    # Seeded: the same states and rewards give the same policy.
    again, _ = train_policy(states, reward, config, progress=False)
    assert again.choose(states) == policy.choose(states)


def test_a_policy_that_learns_nothing_stays_at_the_served_prompt():
    states = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(1)

    def noise(users: np.ndarray, choices: list) -> np.ndarray:
        return rng.normal(size=len(users)) * 0.01 - 0.5 * np.array(
            [c != DEFAULT_CHOICE for c in choices]
        )

    policy, _ = train_policy(states, noise, replace(SMALL, iterations=20), progress=False)
    assert set(policy.choose(states)) == {DEFAULT_CHOICE}


# ---- the model side -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def context(data, splits):
    return ItemCatalog.build(data.items, splits), user_profiles(data.users, splits)


def _moved(splits: Splits) -> Splits:
    """The same splits with every validation and test item replaced by another item."""
    shift = lambda items: [(i + 7) % splits.n_items for i in items]  # noqa: E731
    return replace(splits, valid=shift(splits.valid), test=shift(splits.test))


def _outcome_table(prompt_set: RppPromptSet) -> dict:
    return {u: (o.policy_choice, o.candidate, o.kept) for u, o in prompt_set.state.outcomes.items()}


def test_selection_items_are_training_items_only(lm: RecLM, splits, context, tmp_path):
    catalog, profiles = context
    users = splits.user_indices("all")
    examples = training_examples(splits, users, profiles, catalog, SMALL)
    for u, f, t in zip(examples.owner, examples.fields, examples.targets, strict=True):
        train = splits.train[users[u]]
        assert [*f.history, t] == train[: len(f.history) + 1]

    # Moving every validation and test item changes nothing the search does.
    runs = []
    for s, name in ((splits, "a"), (_moved(splits), "b")):
        out = tmp_path / name / "rpp.json"
        runs.append(run_rpp_search(lm, s, catalog, profiles, out, SMALL, progress=False))
    a, b = runs
    assert _outcome_table(a) == _outcome_table(b) and len(a.state.outcomes) == len(splits.users)
    assert a.state.training["check_reward"] == b.state.training["check_reward"]
    for key, tensor in a.state.policy.state_dict().items():
        assert torch.equal(tensor, b.state.policy.state_dict()[key])


def test_choices_file_and_policy_round_trip(lm: RecLM, splits, context, tmp_path):
    catalog, profiles = context
    out = tmp_path / "rpp.json"
    saved = run_rpp_search(lm, splits, catalog, profiles, out, SMALL, progress=False)
    assert (tmp_path / "rpp-policy" / "policy.safetensors").is_file()
    loaded = RppPromptSet.load(out)
    assert loaded.config == SMALL and loaded.model_fingerprint == lm.fingerprint()
    assert loaded.state.outcomes == saved.state.outcomes
    states = torch.randn(9, loaded.state.policy.state_size)
    assert loaded.state.policy.choose(states) == saved.state.policy.choose(states)
    body = json.loads(out.read_text())
    user = next(iter(body["users"].values()))
    assert len(user["choice"].split("/")) == 3 and "{history" in user["text"]
    # Re-running the same command resumes: nothing is trained or refined again.
    again = run_rpp_search(lm, splits, catalog, profiles, out, SMALL, progress=False)
    assert again.created_at == loaded.created_at and again.state.outcomes == saved.state.outcomes
    with pytest.raises(ValueError, match="another model or config"):
        run_rpp_search(lm, splits, catalog, profiles, out, replace(SMALL, seed=1), progress=False)


def test_rpp_is_registered_and_encodes_each_users_choice(lm: RecLM, splits, context):
    assert "rpp" in strategy_names() and get_strategy("rpp") is RppStrategy
    catalog, profiles = context
    strategy = get_strategy("rpp")(lm, SMALL)
    assert isinstance(strategy, PromptStrategy) and strategy.name == "rpp"
    start = strategy.initial_state()
    assert start.policy is None and not start.outcomes

    examples = training_examples(splits, range(30), profiles, catalog, SMALL)
    state = strategy.search(examples, start)
    assert start == RppState() and state.policy is not None
    assert set(state.outcomes) == set(examples.users)

    # A user whose refinement was kept gets it; anyone else the policy's choice from their fields.
    outcome = next(iter(state.outcomes.values()))
    user = examples.users[0]
    forced = state.copy()
    forced.outcomes[user] = replace(outcome, candidate=(3, 0, 3), kept=True)
    fields = [examples.fields[0]] * 2
    batch = strategy.encode(forced, [user, "someone-new"], fields)
    policy_choice = strategy.rpp.choose(state.policy, fields[1:])[0]
    expected = [render_choice((3, 0, 3), fields[0], lm.max_history)]
    expected.append(render_choice(policy_choice, fields[1], lm.max_history))
    for row, tokens in enumerate(expected):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert ids == [lm.tokenizer.bos_token_id, *(lm.vocab[t] for t in tokens)]

    # Searching some users again leaves every other user's outcome as it was, and theirs the
    # same as in the larger batch (each user refines from their own seeded draws).
    some = training_examples(splits, range(5), profiles, catalog, SMALL)
    again = strategy.search(some, state)
    assert again.policy is state.policy
    for u in examples.users:
        assert again.outcomes[u] == state.outcomes[u]


def test_cli_searches_rpp_on_the_tiny_model(model_dir, dataset_dir, tmp_path, capsys):
    out = tmp_path / "prompts" / "rpp.json"
    args = ["search", "--strategy", "rpp", "--model", str(model_dir), "--data", str(dataset_dir)]
    args += ["--out", str(out), "--iterations", "4", "--batch-users", "16", "--hidden", "8"]
    args += ["--refine-episodes", "1", "--personal", "cold"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "refined choices kept by" in printed and str(out) in printed
    body = json.loads(out.read_text())
    assert body["strategy"] == "rpp" and body["config"]["iterations"] == 4
    assert body["policy"] == "rpp-policy" and (out.parent / "rpp-policy" / "policy.json").is_file()
    assert len(body["users"]) > 0

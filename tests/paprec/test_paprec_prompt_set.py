"""PAP-REC results as served: personal tokens in the prompt, the prompt set file, the pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from paprec_testing import CONFIG

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.pipeline import run_search
from promptrec.models.prompts.paprec.search import PaprecSearch
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet
from promptrec.models.prompts.rendering import render_prompt
from promptrec.models.ranking import encode_token_lists, rank_items
from promptrec.models.templates import TEMPLATES, PromptFields
from promptrec.models.user_context import ItemCatalog, user_profiles


def test_personal_tokens_change_only_their_users_ranking(lm, splits):
    state = PaprecState(task_tokens=["the", "user", "movie"], personal={"u1": ["horror", "the"]})
    fields = [PromptFields(splits.train[u][-5:]) for u in range(3)]
    users = ["u0", "u1", "u2"]

    def scores(s: PaprecState):
        tokens = [
            render_prompt(TEMPLATES["seq-2"], f, s.prompt_for(u), lm.max_history)
            for u, f in zip(users, fields, strict=True)
        ]
        return rank_items(lm, *encode_token_lists(lm, tokens))

    with_personal = scores(state)
    without = scores(PaprecState(task_tokens=state.task_tokens))
    assert torch.allclose(with_personal[[0, 2]], without[[0, 2]], atol=1e-5)
    assert not torch.allclose(with_personal[1], without[1])


def test_search_is_deterministic_and_the_prompt_set_round_trips(lm, examples, tmp_path):
    a = PaprecSearch(lm, CONFIG, progress=False).search_task(examples)
    b = PaprecSearch(lm, CONFIG, progress=False).search_task(examples)
    assert a.task_tokens == b.task_tokens
    outcomes = PaprecSearch(lm, CONFIG, progress=False).search_personal(examples, a.task_tokens)
    a.apply(outcomes)
    path = tmp_path / "prompts.json"
    PromptSet("sequential", CONFIG, a, lm.fingerprint()).save(path)
    loaded = PromptSet.load(path)
    assert loaded.state.task_tokens == a.task_tokens
    assert loaded.state.personal == a.personal
    assert loaded.state.outcomes == a.outcomes
    assert loaded.model_fingerprint == lm.fingerprint()
    assert loaded.config == CONFIG


def test_pipeline_writes_a_prompt_set_and_resumes_without_redoing_users(lm, data, splits, tmp_path):
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    config = PaprecConfig(
        task_tokens=2, personal_tokens=1, candidates=3, max_cycles=1, task_users=10, batch_size=64
    )
    out = tmp_path / "p.json"
    first = run_search(
        lm, splits, catalog, profiles, out, config, personal_users="cold", progress=False
    )
    assert first.state.task_complete
    assert set(first.state.outcomes) == {splits.users[u] for u in splits.user_indices("cold")}
    again = run_search(
        lm, splits, catalog, profiles, out, config, personal_users="all", progress=False
    )
    assert again.state.task_tokens == first.state.task_tokens  # task search not redone
    for user in first.state.outcomes:  # finished users are not searched again
        assert again.state.outcomes[user] == first.state.outcomes[user]
    assert len(again.state.outcomes) == len(splits.users)
    with pytest.raises(ValueError, match="another model or config"):
        run_search(lm, splits, catalog, profiles, out, PaprecConfig(task_tokens=3), progress=False)


def test_a_prompt_set_from_before_the_personal_settings_loads_as_it_was_searched(lm, tmp_path):
    state = PaprecState(task_tokens=["the"])
    path = tmp_path / "old.json"
    PromptSet("sequential", CONFIG, state, lm.fingerprint()).save(path)
    body = json.loads(path.read_text())
    del body["config"]["personal_candidates"], body["config"]["personal_metrics"]
    path.write_text(json.dumps(body))
    config = PromptSet.load(path).config
    assert config.personal_candidates is None and config.personal_metrics is None
    assert config.personal_surrogate == CONFIG.metrics

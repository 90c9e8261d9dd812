"""PAP-REC search on a tiny trained model (synthetic data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.search import PaprecSearch, _triggers
from promptrec.models.prompts.paprec.state import PaprecState, PromptSet
from promptrec.models.prompts.rendering import render_prompt
from promptrec.models.prompts.selection import build_examples
from promptrec.models.ranking import encode_token_lists, item_logits, rank_items, rows_per_call
from promptrec.models.rlm.model import RecLM
from promptrec.models.rlm.train import TrainConfig, train_rlm
from promptrec.models.templates import TEMPLATES, PromptFields
from promptrec.models.user_context import ItemCatalog, user_profiles


@pytest.fixture(scope="module")
def lm(tmp_path_factory, data, splits) -> RecLM:
    out = tmp_path_factory.mktemp("paprec-rlm")
    config = TrainConfig(
        preset="tiny", epochs=1, batch_size=32, lr=5e-3, warmup_steps=10, valid_users=20
    )
    train_rlm(data, splits, out, config, progress=False)
    return RecLM.load(out)


@pytest.fixture(scope="module")
def examples(data, splits):
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    users = list(range(24))
    return build_examples(
        [splits.users[u] for u in users],
        [splits.train[u] for u in users],
        [profiles[u] for u in users],
        catalog,
        per_user=4,
    )


CONFIG = PaprecConfig(task_tokens=3, personal_tokens=2, candidates=4, max_cycles=1, batch_size=64)


def test_candidate_scores_equal_grad_dot_embedding_matrix(lm, examples):
    search = PaprecSearch(lm, CONFIG, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    task = search.ids(["the"] * 3)
    grad = search.trigger_gradients(batch, lambda j: task, position=1)

    # Independently: a one-hot input matrix X, embeddings X @ E, d logp / dX at the trigger row.
    weight = lm.model.get_input_embeddings().weight
    j = 0
    ids, mask = encode_token_lists(lm, [search.tokens(batch.base[j] + task + batch.history[j])])
    onehot = torch.nn.functional.one_hot(ids, weight.shape[0]).float().requires_grad_(True)
    logits = item_logits(lm.model, ids, mask, lm.item_token_ids(), onehot @ weight)
    logits[0, batch.exclude[j]] = float("-inf")
    logp = torch.log_softmax(logits, 1)[0, batch.targets[j]]
    (expected,) = torch.autograd.grad(logp, onehot)
    position = 1 + len(batch.base[j]) + 1  # after <s> and the template's words
    ours = search.candidate_scores(grad[j : j + 1])[0]
    assert torch.allclose(ours, expected[0, position, search.word_ids], atol=1e-5)


def test_task_tokens_are_kept_only_if_they_beat_the_plain_template(lm, examples):
    search = PaprecSearch(lm, CONFIG, progress=False)
    state = search.search_task(examples)
    final = state.task_history[-1]
    batch = search.prepare(examples, examples.subset(held_out=False))
    plain = search.task_surrogate(batch, lambda j: [])
    assert final["round"] == "final" and final["surrogate_plain_template"] == round(plain, 5)
    if final["kept"]:
        ids = search.ids(state.task_tokens)
        assert len(ids) == CONFIG.task_tokens
        assert search.task_surrogate(batch, lambda j: ids) > plain
    else:
        assert state.task_tokens == [] and final["surrogate_with_tokens"] <= round(plain, 5)


def test_candidates_are_words_only(lm, examples):
    search = PaprecSearch(lm, CONFIG, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    task = search.ids(["the"] * 3)
    grad = search.trigger_gradients(batch, lambda j: task, 0).mean(0, keepdim=True)
    for token in search.tokens(search.top_candidates(grad, [task[0]])[0].tolist()):
        assert token.isalpha() and token.islower() and not token.startswith("item")


def test_acceptance_never_lowers_the_surrogate(lm, examples):
    search = PaprecSearch(lm, CONFIG, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    task = search.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), search.vocab["the"])
    best = float(
        search.example_scores(batch, lambda j: task + personal[batch.owner[j]].tolist())[0].mean()
    )
    for position in range(3):
        new_best, _ = search.task_round(batch, task, personal, position, best)
        measured = float(
            search.example_scores(batch, lambda j: task + personal[batch.owner[j]].tolist())[
                0
            ].mean()
        )
        assert new_best >= best and measured == pytest.approx(new_best)
        best = new_best
    user_best = search._user_means(batch, task, personal, len(examples.users))
    before = user_best.copy()
    search.personal_round(batch, task, personal, 0, user_best)
    assert (user_best >= before).all()
    assert np.allclose(user_best, search._user_means(batch, task, personal, len(examples.users)))


def _counting_passes(search: PaprecSearch) -> list[int]:
    """Rows of every scoring pass `search` makes from now on, in order."""
    passes: list[int] = []
    original = search.example_scores
    search.example_scores = lambda b, t, *m: passes.append(len(b.base)) or original(b, t, *m)
    return passes


def test_screened_acceptance_is_exact_and_scores_few_candidates_fully(lm, examples):
    config = replace(
        CONFIG, screen_fraction=0.5, screen_min_examples=8, screen_promote=1, recheck_fraction=None
    )
    search = PaprecSearch(lm, config, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    current = search.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), search.vocab["the"])
    best = search.task_surrogate(batch, _triggers(batch, current, personal))
    words = [w for w in ("movie", "user", "drama", "comedy", "horror") if w in search.vocab]
    trials = [[search.vocab[w], *current[1:]] for w in words]

    passes = _counting_passes(search)
    new_best, chosen = search.accept_best(batch, current, trials, personal, best)
    screened = len(search._screen(batch).stages[0].base)
    # One stacked pass over the screening rows (current + trials), then at most
    # `screen_promote` passes over the other rows.
    assert passes[0] == (1 + len(trials)) * screened
    assert len(passes) - 1 <= config.screen_promote
    assert set(passes[1:]) <= {len(batch.base) - screened}
    if chosen is None:
        assert new_best == best
    else:
        exact = search.task_surrogate(batch, _triggers(batch, trials[chosen], personal))
        assert new_best == pytest.approx(exact, abs=1e-12) and exact > best
    # Scoring every candidate fully can only find the same or better.
    every = PaprecSearch(lm, replace(config, screen_fraction=None), progress=False)
    assert every.accept_best(batch, current, trials, personal, best)[0] >= new_best
    # The current prompt's screening scores are kept while it stays current.
    now = trials[chosen] if chosen is not None else current
    passes.clear()
    search.accept_best(batch, now, trials, personal, new_best)
    assert passes[0] == len(trials) * screened
    passes.clear()
    personal[:, 0] = search.vocab["movie"]  # new personal tokens: the current prompt changed
    search.accept_best(batch, now, trials, personal, new_best)
    assert passes[0] == (1 + len(trials)) * screened


def test_raced_acceptance_matches_the_rule_and_stops_losers_at_the_recheck(lm, examples):
    # A small screen: luck there is common, and the recheck has losers to stop.
    config = replace(
        CONFIG, screen_fraction=0.1, screen_min_examples=4, screen_promote=20, recheck_fraction=0.5
    )
    search = PaprecSearch(lm, config, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    n = len(batch.base)
    screen = search._screen(batch)
    sizes = [len(stage.base) for stage in screen.stages]
    assert sizes == [round(0.1 * n), round(0.5 * n) - round(0.1 * n), n - round(0.5 * n)]
    assert sorted(np.concatenate(screen.index).tolist()) == list(range(n))

    start = search.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), search.vocab["the"])
    grad = search.trigger_gradients(batch, _triggers(batch, start, personal), 0).mean(0)
    words = search.top_candidates(grad[None], [start[0]], k=16)[0].tolist()
    words += search.ids([w for w in ("movie", "user", "drama", "comedy") if w in search.vocab])

    # The rule, computed independently: per-stage sums of every prompt, one plain pass each.
    def sums(task):
        return np.array(
            [
                search.example_scores(stage, _triggers(stage, task, personal))[0].sum()
                for stage in screen.stages
            ]
        )

    def race(current_word):
        current = [current_word, *start[1:]]
        trials = [[w, *start[1:]] for w in words if w != current_word]
        base, each = sums(current), [sums(t) for t in trials]
        order = np.argsort([-e[0] for e in each], kind="stable")
        screened = [c for c in order if each[c][0] > base[0]]
        rechecked = [c for c in screened if each[c][:2].sum() > base[:2].sum()]
        return current, trials, each, screened, rechecked

    # A current prompt for which the recheck stops some screened trials and passes others, so
    # the test shows each path.
    for word in sorted(words, key=lambda w: sums([w, *start[1:]]).sum()):
        current, trials, each, screened, rechecked = race(word)
        if 0 < len(rechecked) < len(screened):
            break
    assert 0 < len(rechecked) < len(screened)
    best = search.task_surrogate(batch, _triggers(batch, current, personal))
    expected, expected_best = None, best
    for c in rechecked:
        if each[c].sum() / n > expected_best:
            expected, expected_best = int(c), each[c].sum() / n

    passes = _counting_passes(search)
    new_best, chosen = search.accept_best(batch, current, trials, personal, best)
    assert chosen == expected and new_best == pytest.approx(expected_best, abs=1e-12)
    # Stacked screen; each finalist's recheck (the current prompt's recheck scored once, on
    # first need); the long pass only for those still ahead after the recheck.
    assert passes[0] == (1 + len(trials)) * sizes[0]
    assert passes[1:].count(sizes[2]) == len(rechecked)
    assert passes[1:].count(sizes[1]) == len(screened) + 1


def test_a_remembered_full_pass_spares_the_race_any_pass_of_the_current_prompt(lm, examples):
    config = replace(CONFIG, screen_fraction=0.25, screen_min_examples=8, recheck_fraction=0.5)
    search = PaprecSearch(lm, config, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    current = search.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), search.vocab["the"])
    best = search._measure(batch, current, personal)
    screen = search._screen(batch)
    for stage, kept in zip(screen.stages, screen.incumbent, strict=True):
        alone = search.example_scores(stage, _triggers(stage, current, personal))[0]
        assert np.allclose(kept, alone, atol=1e-9)
    words = search.ids([w for w in ("movie", "user", "drama", "comedy") if w in search.vocab])
    trials = [[w, *current[1:]] for w in words]
    passes = _counting_passes(search)
    search.accept_best(batch, current, trials, personal, best)
    assert passes[0] == len(trials) * len(screen.stages[0].base)  # no row of the current prompt
    assert len(passes) - 1 <= 2 * config.screen_promote  # a finalist's recheck and rest only


def test_stacked_screening_pass_equals_one_pass_per_candidate(lm, examples):
    config = replace(CONFIG, screen_fraction=0.5, screen_min_examples=8)
    search = PaprecSearch(lm, config, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    screen = search._screen(batch)
    assert screen is not None and len(screen.stages[0].base) == round(0.5 * len(batch.base))
    assert search._screen(batch) is screen  # seeded once per batch, then reused
    personal = np.full((len(examples.users), 2), search.vocab["the"])
    tasks = [search.ids(["the"] * 3), search.ids(["movie", "the", "user"])]
    screen.track(b"current")
    trials = search._screen_scores(screen, tasks[0], tasks[1:], personal)
    assert sum(len(stage.base) for stage in screen.stages) == len(batch.base)
    stacked = [screen.incumbent[0].mean(), *trials.mean(axis=1)]
    rows = screen.stages[0]
    for task, value in zip(tasks, stacked, strict=True):
        alone = search.task_surrogate(rows, _triggers(rows, task, personal))
        assert value == pytest.approx(alone, abs=1e-9)


def test_scores_and_gradients_do_not_depend_on_rows_per_model_call(lm, examples):
    # Chunks pad to their own widest prompt: padding must not leak into any score.
    searches = [
        PaprecSearch(lm, replace(CONFIG, batch_size=size), progress=False) for size in (5, None)
    ]
    assert searches[1].rows_per_call == rows_per_call(lm.device) == 64  # tests run on CPU
    batches = [s.prepare(examples, examples.subset(held_out=False)) for s in searches]
    assert len(batches[0].base) > 5
    task = searches[0].ids(["the", "movie", "user"])
    surrogate, logp = zip(
        *(s.example_scores(b, lambda j: task) for s, b in zip(searches, batches, strict=True)),
        strict=True,
    )
    assert np.allclose(logp[0], logp[1], atol=1e-5)
    # Ranks agree; a float tie between the target and another item may flip one of them.
    assert (surrogate[0] != surrogate[1]).sum() <= 1
    grads = [
        s.trigger_gradients(b, lambda j: task, 1) for s, b in zip(searches, batches, strict=True)
    ]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def _trying_everyone(search: PaprecSearch) -> PaprecSearch:
    """`search` with every user in every personal round, as the searches did before."""
    search._untried_personal_round = lambda batch, task, personal, slot, best, tried: (
        search.personal_round(batch, task, personal, slot, best)
    )
    return search


def _recording_rounds(search: PaprecSearch) -> list[tuple[set[int], np.ndarray]]:
    """(users in the round, who moved) of every personal round `search` makes from now on."""
    rounds, original = [], search.personal_round

    def recorded(batch, *args):
        moved = original(batch, *args)
        rounds.append((set(batch.owner.tolist()), moved.copy()))
        return moved

    search.personal_round = recorded
    return rounds


def test_users_sit_out_a_personal_round_they_already_tried_with_the_same_outcome(lm, examples):
    config = replace(CONFIG, max_cycles=3)
    d, task_tokens = config.personal_tokens, ["the", "movie", "the"]
    reference = _trying_everyone(PaprecSearch(lm, config, progress=False))
    expected = reference.search_personal(examples, task_tokens)
    search = PaprecSearch(lm, config, progress=False)
    rounds = _recording_rounds(search)
    assert search.search_personal(examples, task_tokens) == expected
    # A user who went a whole cycle (d rounds) without moving is in no later round.
    sat_out = 0
    for r in range(d, len(rounds)):
        settled = {
            u for u in range(len(examples.users)) if not any(m[u] for _, m in rounds[r - d : r])
        }
        settled &= set.union(*(users for users, _ in rounds[r - d : r]))
        assert not settled & rounds[r][0]
        sat_out += len(settled)
    assert sat_out > 0  # the case occurs here, so the test shows it


def test_the_task_search_gives_the_same_prompts_with_untried_users_only(lm, examples):
    config = replace(CONFIG, max_cycles=2)
    reference = _trying_everyone(PaprecSearch(lm, config, progress=False))
    expected = reference.search_task(examples)
    search = PaprecSearch(lm, config, progress=False)
    rounds = _recording_rounds(search)
    state = search.search_task(examples)
    assert state.task_history == expected.task_history
    assert state.task_tokens == expected.task_tokens
    everyone = set(range(len(examples.users)))
    assert any(users < everyone for users, _ in rounds)  # some round left users out


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


def test_incremental_search_leaves_other_users_untouched(lm, examples):
    search = PaprecSearch(lm, CONFIG, progress=False)
    state = PaprecState(task_tokens=["the"] * 3, personal={"someone": ["drama", "the"]})
    outcomes = search.search_personal(examples, state.task_tokens)
    before_other = dict(state.personal)
    state.apply(outcomes)
    assert set(outcomes) == set(examples.users)
    assert state.personal["someone"] == before_other["someone"]
    assert any(o.kept for o in outcomes.values())
    for user, o in outcomes.items():
        assert (user in state.personal) == o.kept
        if o.kept:
            assert o.surrogate_after > o.surrogate_before
            assert o.held_out_logp_after > o.held_out_logp_before


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
    from promptrec.models.prompts.paprec.pipeline import run_search

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


def test_the_surrogate_sums_the_configured_metrics_at_any_cutoff(lm, examples):
    def surrogate(*metrics):
        search = PaprecSearch(lm, replace(CONFIG, metrics=metrics), progress=False)
        batch = search.prepare(examples, range(len(examples.targets)))
        return search.example_scores(batch, lambda j: search.ids(["the"] * 3))[0]

    at10, at50 = surrogate("NDCG@10"), surrogate("NDCG@50")
    ranks = np.where(at50 > 0, 2 ** (1 / np.where(at50 > 0, at50, 1)) - 2, 50).round()
    assert ((ranks >= 10) & (ranks < 50)).any()  # the @50 term sees examples @10 cannot
    assert at10 == pytest.approx(np.where(ranks < 10, at50, 0.0))
    both = surrogate("NDCG@50", "HR@50", "HR@3")
    assert both == pytest.approx(at50 + (ranks < 50) + (ranks < 3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        *(
            ({key: value}, "metric")
            for key in ("metrics", "personal_metrics")
            for value in [(), ("MRR",), ("NDCG@10", "HR@0")]
        ),
        ({"candidates": 0}, "candidates"),
        ({"personal_candidates": 0}, "candidates"),
    ],
)
def test_bad_surrogate_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        PaprecConfig(**options)


def test_personal_rounds_use_their_own_surrogate_and_candidates(lm, examples, monkeypatch):
    split = replace(CONFIG, metrics=("NDCG@10",), personal_metrics=("NDCG@50",), candidates=3)
    split = replace(split, personal_candidates=6)
    search = PaprecSearch(lm, split, progress=False)
    batch = search.prepare(examples, examples.subset(held_out=False))
    task, n = search.ids(["the"] * 3), len(examples.users)
    personal = np.full((n, 2), search.vocab["the"])
    # The same numbers as searches whose only surrogate is the one each part should use.
    only = {
        m: PaprecSearch(lm, replace(CONFIG, metrics=(m,), personal_metrics=None), progress=False)
        for m in ("NDCG@10", "NDCG@50")
    }
    assert search._user_means(batch, task, personal, n) == pytest.approx(
        only["NDCG@50"]._user_means(batch, task, personal, n)
    )
    assert not np.allclose(
        only["NDCG@50"]._user_means(batch, task, personal, n),
        only["NDCG@10"]._user_means(batch, task, personal, n),
    )
    triggers = _triggers(batch, task, personal)
    assert search.task_surrogate(batch, triggers) == only["NDCG@10"].task_surrogate(batch, triggers)

    proposed = []
    top = search.top_candidates
    monkeypatch.setattr(
        search, "top_candidates", lambda *a: proposed.append(top(*a).shape[1]) or top(*a)
    )
    best = search.task_surrogate(batch, triggers)
    search.task_round(batch, task, personal, 0, best)
    assert proposed == [3]
    scored = []
    example_scores = search.example_scores
    monkeypatch.setattr(
        search,
        "example_scores",
        lambda b, t, m=None: scored.append(m or split.metrics) or example_scores(b, t, m),
    )
    search.personal_round(batch, task, personal, 0, search._user_means(batch, task, personal, n))
    assert proposed == [3, 6]
    assert set(scored) == {("NDCG@50",)}


def test_a_prompt_set_from_before_the_personal_settings_loads_as_it_was_searched(
    lm, examples, tmp_path
):
    import json

    state = PaprecState(task_tokens=["the"])
    path = tmp_path / "old.json"
    PromptSet("sequential", CONFIG, state, lm.fingerprint()).save(path)
    body = json.loads(path.read_text())
    del body["config"]["personal_candidates"], body["config"]["personal_metrics"]
    path.write_text(json.dumps(body))
    config = PromptSet.load(path).config
    assert config.personal_candidates is None and config.personal_metrics is None
    assert config.personal_surrogate == CONFIG.metrics

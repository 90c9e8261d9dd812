"""The screening race of task rounds: exact acceptance, fewer and shorter passes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from paprec_testing import CONFIG, counting_passes

from promptrec.models.prompts.paprec.scoring import PromptScorer, triggers
from promptrec.models.prompts.paprec.screening import screen_for, screen_scores
from promptrec.models.prompts.paprec.search import PaprecSearch


def test_screened_acceptance_is_exact_and_scores_few_candidates_fully(lm, examples):
    config = replace(
        CONFIG, screen_fraction=0.5, screen_min_examples=8, screen_promote=1, recheck_fraction=None
    )
    search = PaprecSearch(lm, config, progress=False)
    scorer = search.scorer
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    current = scorer.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), scorer.vocab["the"])
    best = scorer.task_surrogate(batch, triggers(batch, current, personal))
    words = [w for w in ("movie", "user", "drama", "comedy", "horror") if w in scorer.vocab]
    trials = [[scorer.vocab[w], *current[1:]] for w in words]

    passes = counting_passes(scorer)
    new_best, chosen = search.accept_best(batch, current, trials, personal, best)
    screened = len(screen_for(batch, config).stages[0].base)
    # One stacked pass over the screening rows (current + trials), then at most
    # `screen_promote` passes over the other rows.
    assert passes[0] == (1 + len(trials)) * screened
    assert len(passes) - 1 <= config.screen_promote
    assert set(passes[1:]) <= {len(batch.base) - screened}
    if chosen is None:
        assert new_best == best
    else:
        exact = scorer.task_surrogate(batch, triggers(batch, trials[chosen], personal))
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
    personal[:, 0] = scorer.vocab["movie"]  # new personal tokens: the current prompt changed
    search.accept_best(batch, now, trials, personal, new_best)
    assert passes[0] == (1 + len(trials)) * screened


def test_raced_acceptance_matches_the_rule_and_stops_losers_at_the_recheck(lm, examples):
    # A small screen: luck there is common, and the recheck has losers to stop.
    config = replace(
        CONFIG, screen_fraction=0.1, screen_min_examples=4, screen_promote=20, recheck_fraction=0.5
    )
    search = PaprecSearch(lm, config, progress=False)
    scorer = search.scorer
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    n = len(batch.base)
    screen = screen_for(batch, config)
    sizes = [len(stage.base) for stage in screen.stages]
    assert sizes == [round(0.1 * n), round(0.5 * n) - round(0.1 * n), n - round(0.5 * n)]
    assert sorted(np.concatenate(screen.index).tolist()) == list(range(n))

    start = scorer.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), scorer.vocab["the"])
    grad = scorer.trigger_gradients(batch, triggers(batch, start, personal), 0).mean(0)
    words = scorer.top_candidates(grad[None], [start[0]], k=16)[0].tolist()
    words += scorer.ids([w for w in ("movie", "user", "drama", "comedy") if w in scorer.vocab])

    # The rule, computed independently: per-stage sums of every prompt, one plain pass each.
    def sums(task):
        return np.array(
            [
                scorer.example_scores(stage, triggers(stage, task, personal))[0].sum()
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
    best = scorer.task_surrogate(batch, triggers(batch, current, personal))
    expected, expected_best = None, best
    for c in rechecked:
        if each[c].sum() / n > expected_best:
            expected, expected_best = int(c), each[c].sum() / n

    passes = counting_passes(scorer)
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
    scorer = search.scorer
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    current = scorer.ids(["the"] * 3)
    personal = np.full((len(examples.users), 2), scorer.vocab["the"])
    best = search.measure(batch, current, personal)
    screen = screen_for(batch, config)
    for stage, kept in zip(screen.stages, screen.incumbent, strict=True):
        alone = scorer.example_scores(stage, triggers(stage, current, personal))[0]
        assert np.allclose(kept, alone, atol=1e-9)
    words = scorer.ids([w for w in ("movie", "user", "drama", "comedy") if w in scorer.vocab])
    trials = [[w, *current[1:]] for w in words]
    passes = counting_passes(scorer)
    search.accept_best(batch, current, trials, personal, best)
    assert passes[0] == len(trials) * len(screen.stages[0].base)  # no row of the current prompt
    assert len(passes) - 1 <= 2 * config.screen_promote  # a finalist's recheck and rest only


def test_stacked_screening_pass_equals_one_pass_per_candidate(lm, examples):
    config = replace(CONFIG, screen_fraction=0.5, screen_min_examples=8)
    scorer = PromptScorer(lm, config)
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    screen = screen_for(batch, config)
    assert screen is not None and len(screen.stages[0].base) == round(0.5 * len(batch.base))
    assert screen_for(batch, config) is screen  # seeded once per batch, then reused
    personal = np.full((len(examples.users), 2), scorer.vocab["the"])
    tasks = [scorer.ids(["the"] * 3), scorer.ids(["movie", "the", "user"])]
    screen.track(b"current")
    trials = screen_scores(scorer, screen, tasks[0], tasks[1:], personal)
    assert sum(len(stage.base) for stage in screen.stages) == len(batch.base)
    stacked = [screen.incumbent[0].mean(), *trials.mean(axis=1)]
    rows = screen.stages[0]
    for task, value in zip(tasks, stacked, strict=True):
        alone = scorer.task_surrogate(rows, triggers(rows, task, personal))
        assert value == pytest.approx(alone, abs=1e-9)

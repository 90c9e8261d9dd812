"""The screening race of task rounds (`PaprecConfig.screen_fraction`), and its score memo.

Most gradient candidates lose, and losing shows on a fraction of the examples. So all trials
are first scored together on a seeded screening share of the examples; only the best
`screen_promote` that beat the current prompt there go on, first to the recheck share (where
they must still beat the current prompt on every example scored so far), then to the rest.
Acceptance stays exact: a trial's full surrogate, strictly above the current best.
The current prompt's per-stage scores are kept while it stays current, so they are not scored
again every round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.scoring import ExampleBatch, PromptScorer


@dataclass
class Screen:
    """A batch split into racing stages: the screening rows, then (optionally) the recheck rows,
    then the rest. A finalist's surrogate adds up its per-stage scores, each stage scored once."""

    index: list[np.ndarray]  # rows of the batch in each stage
    stages: list[ExampleBatch]
    size: int  # examples in the whole batch
    incumbent_key: bytes | None = None
    incumbent: list[np.ndarray | None] = field(default_factory=list)
    """The current prompt's per-example scores in each stage, filled in as stages need them and
    kept while it stays current (keyed by `incumbent_key`), so it is not re-scored every round."""

    def track(self, key: bytes) -> None:
        """Make `key` the current prompt; its scores are forgotten unless it already was."""
        if key != self.incumbent_key:
            self.incumbent_key, self.incumbent = key, [None] * len(self.stages)

    def adopt(self, key: bytes, scores: list[np.ndarray]) -> None:
        """Make `key` the current prompt, with its scores in every stage already known."""
        self.incumbent_key, self.incumbent = key, list[np.ndarray | None](scores)


def prompt_key(task: Sequence[int], personal: np.ndarray) -> bytes:
    """Identity of a whole prompt: the task tokens and every user's personal tokens."""
    return np.asarray(task, dtype=np.int64).tobytes() + b"|" + personal.tobytes()


def screen_for(batch: ExampleBatch, config: PaprecConfig) -> Screen | None:
    """The racing stages of `batch`, seeded by `config.seed` and built once per batch; None
    when screening is off or the batch is too small to screen."""
    if config.screen_fraction is None:
        return None
    n = len(batch.base)
    size = max(config.screen_min_examples, round(config.screen_fraction * n))
    if size >= n:
        return None
    if batch.screen is None:
        rng = np.random.default_rng(config.seed)
        rest = np.ones(n, dtype=bool)
        index = [np.sort(rng.choice(n, size, replace=False))]
        rest[index[0]] = False
        recheck = round((config.recheck_fraction or 0) * n) - size
        if 0 < recheck < rest.sum():
            index.append(np.sort(rng.choice(np.flatnonzero(rest), recheck, replace=False)))
            rest[index[1]] = False
        index.append(np.flatnonzero(rest))
        batch.screen = Screen(index, [batch.rows(i) for i in index], n)
    return batch.screen


def remember_scores(
    batch: ExampleBatch,
    config: PaprecConfig,
    task: list[int],
    personal: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Per-example scores of the current prompt over all of `batch`, from a full pass the
    caller made anyway: the race then never re-scores it."""
    screen = screen_for(batch, config)
    if screen is not None:
        screen.adopt(prompt_key(task, personal), [scores[index] for index in screen.index])


def race(
    scorer: PromptScorer,
    screen: Screen,
    current: list[int],
    trials: Sequence[list[int]],
    personal: np.ndarray,
    best: float,
    promote: int,
) -> tuple[float, int | None]:
    """The trial task tokens with the highest surrogate on the whole screened batch, if strictly
    above `best` (the surrogate of `current`); returns the new best and the trial's index or
    None. At most `promote` trials, best on the screen first, are scored beyond it."""
    screen.track(prompt_key(current, personal))
    first = screen_scores(scorer, screen, current, trials, personal)
    incumbent = screen.incumbent[0]
    assert incumbent is not None  # screen_scores scored the current prompt on the screen
    sums, to_beat = first.sum(axis=1), incumbent.sum()
    finalists = [c for c in np.argsort(-sums, kind="stable") if sums[c] > to_beat]
    chosen, chosen_scores = None, None
    for c in finalists[:promote]:
        scores = _finalist_scores(scorer, screen, current, trials[c], personal, first[c])
        if scores is None:
            continue
        score = float(sum(part.sum() for part in scores) / screen.size)
        if score > best:
            best, chosen, chosen_scores = score, int(c), scores
    if chosen is not None and chosen_scores is not None:
        screen.adopt(prompt_key(trials[chosen], personal), chosen_scores)
    return best, chosen


def screen_scores(
    scorer: PromptScorer,
    screen: Screen,
    current: list[int],
    trials: Sequence[list[int]],
    personal: np.ndarray,
) -> np.ndarray:
    """Per-example surrogates on the screening rows, [trial, example], with the current
    prompt's filled into `screen.incumbent` when they are not kept yet. The rows are
    repeated once per prompt and scored in one call, instead of one small call per prompt.
    `screen` must be tracking `current`."""
    cached = screen.incumbent[0] is not None
    tasks = list(trials) if cached else [current, *trials]
    rows = screen.stages[0]
    n = len(rows.base)
    stacked = rows.rows(np.tile(np.arange(n), len(tasks)))
    scores = scorer.example_scores(
        stacked, lambda j: tasks[j // n] + personal[stacked.owner[j]].tolist()
    )[0].reshape(len(tasks), n)
    if not cached:
        screen.incumbent[0] = scores[0]
        scores = scores[1:]
    return scores


def _finalist_scores(
    scorer: PromptScorer,
    screen: Screen,
    current: list[int],
    trial: list[int],
    personal: np.ndarray,
    screened: np.ndarray,
) -> list[np.ndarray] | None:
    """A screened finalist's per-example scores in every stage, or None if it no longer
    beats `current` on the examples scored by the recheck (the rest is judged by the
    caller, against the exact full surrogate)."""
    scores = [screened]
    for k in range(1, len(screen.stages) - 1):  # the recheck stage, when there is one
        scores.append(scorer.surrogates(screen.stages[k], trial, personal))
        to_beat = [_incumbent_scores(scorer, screen, j, current, personal) for j in range(k + 1)]
        if sum(part.sum() for part in scores) <= sum(part.sum() for part in to_beat):
            return None
    scores.append(scorer.surrogates(screen.stages[-1], trial, personal))
    return scores


def _incumbent_scores(
    scorer: PromptScorer, screen: Screen, k: int, current: list[int], personal: np.ndarray
) -> np.ndarray:
    scores = screen.incumbent[k]
    if scores is None:
        scores = screen.incumbent[k] = scorer.surrogates(screen.stages[k], current, personal)
    return scores

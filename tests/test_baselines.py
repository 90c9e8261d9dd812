"""Baselines: popularity, windowed Markov chain and SASRec on tiny synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from promptrec.models.baselines import (
    ItemScorer,
    MarkovConfig,
    MarkovScorer,
    PopularityScorer,
    SASRecConfig,
    SASRecScorer,
)
from promptrec.models.baselines.sasrec import (
    PAD,
    TUNED,
    length_pooled_order,
    moving_average,
    sasrec_variants,
    training_windows,
)
from promptrec.models.metrics import target_ranks

TINY = SASRecConfig(
    hidden=32, blocks=1, heads=2, max_len=16, dropout=0.0, lr=1e-2, batch_size=32, epochs=25
)


def cyclic_data(
    n_users: int = 50, n_items: int = 20, n_cycles: int = 3, length: int = 24, seed: int = 0
) -> tuple[list[list[int]], dict[int, int]]:
    """Items permuted and split into `n_cycles` interleaved cycles; each user walks one of them.

    Returns the sequences and the (deterministic) successor of every item.
    """
    rng = np.random.default_rng(seed)
    cycles = np.array_split(rng.permutation(n_items), n_cycles)
    successor = {int(c[i]): int(c[(i + 1) % len(c)]) for c in cycles for i in range(len(c))}
    sequences = []
    for u in range(n_users):
        cycle = cycles[u % n_cycles]
        start = int(rng.integers(len(cycle)))
        sequences.append([int(cycle[(start + t) % len(cycle)]) for t in range(length)])
    return sequences, successor


def split_last(sequences: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
    return [s[:-1] for s in sequences], np.array([s[-1] for s in sequences])


def check_output(scorer: ItemScorer, histories: list[list[int]], n_items: int) -> np.ndarray:
    scores = scorer.score(histories)
    assert isinstance(scorer, ItemScorer)
    assert isinstance(scores, np.ndarray)
    assert scores.dtype == np.float32
    assert scores.shape == (len(histories), n_items)
    assert np.isfinite(scores).all()
    return scores


def test_popularity_ranks_most_frequent_first() -> None:
    sequences = [[3, 1, 3], [3, 2], [1, 0, 3]]
    scorer = PopularityScorer().fit(sequences, n_items=5)
    scores = check_output(scorer, [[0], [], [4, 2]], 5)
    assert (scores.argmax(axis=1) == 3).all()
    np.testing.assert_array_equal(scores[0], [1, 2, 1, 4, 0])


def test_popularity_rejects_out_of_range_items() -> None:
    with pytest.raises(ValueError):
        PopularityScorer().fit([[0, 5]], n_items=5)


def test_popularity_score_before_fit_raises() -> None:
    with pytest.raises(RuntimeError):
        PopularityScorer().score([[0]])


def test_markov_follows_deterministic_cycle() -> None:
    n_items = 6
    cycle = [0, 1, 2, 3]
    sequences = [[cycle[(s + t) % 4] for t in range(15)] for s in range(4)]
    sequences.append([4, 5, 4, 5])  # popular-ish items that never follow the cycle
    scorer = MarkovScorer().fit(sequences, n_items)
    histories = [[0], [0, 1], [2, 3, 0, 1, 2], [3]]
    scores = check_output(scorer, histories, n_items)
    np.testing.assert_array_equal(scores.argmax(axis=1), [1, 2, 3, 0])


def test_markov_popularity_backoff_ranks_unseen_transitions() -> None:
    # Item 3 is never followed by anything: its row is empty, popularity decides.
    sequences = [[0, 1, 1, 1, 2, 3]]
    scorer = MarkovScorer(MarkovConfig(order=1)).fit(sequences, n_items=5)
    scores = check_output(scorer, [[3], []], 5)
    for row in scores:
        assert row.argmax() == 1
        assert row[4] == 0.0 < row[2]  # never-seen item last, seen items above it


def test_markov_transition_rows_are_normalised() -> None:
    sequences, _ = cyclic_data()
    scorer = MarkovScorer(MarkovConfig(window=2)).fit(sequences, 20)
    rows = np.repeat(np.arange(20), np.diff(scorer.indptr))
    np.testing.assert_allclose(np.bincount(rows, weights=scorer.probs, minlength=20), 1.0)


def test_training_windows_cover_every_transition_once() -> None:
    inputs, targets = training_windows([list(range(10)), [7], [4, 2]], max_len=4)
    assert inputs.shape == targets.shape == (4, 4)
    pairs = {
        (i - 1, t)
        for row_i, row_t in zip(inputs, targets, strict=True)
        for i, t in zip(row_i, row_t, strict=True)
        if t != -100
    }
    assert pairs == {(k, k + 1) for k in range(9)} | {(4, 2)}
    assert (targets != -100).sum() == 10  # 9 + 1: no transition trained twice
    # Right padding: PAD only after the real items.
    assert inputs[-1].tolist() == [5, PAD, PAD, PAD]
    assert training_windows([list(range(10))], max_len=4, max_windows=1)[0].shape == (1, 4)


def test_sasrec_learns_cyclic_next_item() -> None:
    sequences, successor = cyclic_data()
    train = [s[:-1] for s in sequences]
    scorer = SASRecScorer(TINY, progress=False).fit(train, 20)
    # Histories both shorter and longer than max_len.
    histories = [s[: 3 + (i % 20)] for i, s in enumerate(sequences)]
    targets = np.array([successor[h[-1]] for h in histories])
    scores = check_output(scorer, histories, 20)
    hr1 = float((target_ranks(scores, targets, exclude=None) == 0).mean())
    assert hr1 > 0.9, hr1
    assert scorer.train_seconds < 10


def test_sasrec_uses_context_beyond_last_item() -> None:
    # Each user walks i -> i + stride (mod 20) with stride 1, 3 or 7: the last item alone does
    # not determine the next one, the last two do.
    rng = np.random.default_rng(0)
    sequences = []
    for u in range(60):
        stride, start = (1, 3, 7)[u % 3], int(rng.integers(20))
        sequences.append([(start + stride * t) % 20 for t in range(24)])
    scorer = SASRecScorer(TINY, progress=False).fit([s[:-1] for s in sequences], 20)
    histories = [s[: 3 + (i % 20)] for i, s in enumerate(sequences)]
    targets = np.array([(2 * h[-1] - h[-2]) % 20 for h in histories])
    hr1 = float((target_ranks(scorer.score(histories), targets, exclude=None) == 0).mean())
    assert hr1 > 0.85, hr1


def test_sasrec_restores_torch_threads() -> None:
    sequences, _ = cyclic_data(n_users=6)
    before = torch.get_num_threads()
    config = SASRecConfig(hidden=8, blocks=1, heads=1, max_len=4, epochs=1, cpu_threads=1)
    SASRecScorer(config, progress=False).fit(sequences, 20).score(sequences)
    assert torch.get_num_threads() == before


def test_sasrec_early_stopping_keeps_best_state() -> None:
    sequences, _ = cyclic_data(n_users=30)
    histories, targets = split_last(sequences)
    config = SASRecConfig(
        hidden=16,
        blocks=1,
        heads=1,
        max_len=8,
        epochs=6,
        eval_every=2,
        smooth_window=1,  # the raw score: the best single evaluation is kept
        patience=1,
        seed=3,
    )
    scorer = SASRecScorer(config, progress=False).fit(histories, 20, valid=(histories, targets))
    evaluated = [h["epoch"] for h in scorer.history]
    assert evaluated[:2] == [2, 4] and set(evaluated) <= {2, 4, 6}
    best = max(scorer.history, key=lambda h: h["ndcg@10"])
    assert scorer.best_epoch == best["epoch"]
    assert scorer.evaluate(histories, targets.tolist()) == pytest.approx(best["ndcg@10"])


def test_sasrec_is_deterministic_and_handles_empty_history() -> None:
    sequences, _ = cyclic_data(n_users=10)
    config = SASRecConfig(hidden=16, blocks=1, heads=1, max_len=8, epochs=2, seed=1)
    a = SASRecScorer(config, progress=False).fit(sequences, 20)
    b = SASRecScorer(config, progress=False).fit(sequences, 20)
    histories = [[], [3], sequences[0]]
    scores = check_output(a, histories, 20)
    np.testing.assert_array_equal(scores, b.score(histories))
    assert not a.model.training  # type: ignore[union-attr]
    assert torch.device(a.device).type in {"cpu", "cuda"}


def test_moving_average_is_trailing_and_shorter_at_the_start() -> None:
    np.testing.assert_allclose(
        moving_average([0.1, 0.3, 0.2, 0.4, 0.0], 3), [0.1, 0.2, 0.2, 0.3, 0.2]
    )
    assert moving_average([0.1, 0.3], 1) == [0.1, 0.3]
    with pytest.raises(ValueError):
        moving_average([0.1], 0)


def scripted_fit(
    monkeypatch: pytest.MonkeyPatch, scores: list[float], **overrides: int
) -> tuple[SASRecScorer, list[torch.Tensor], tuple[list[list[int]], np.ndarray]]:
    """A real fit whose validation scores are `scores` in turn; records the weights evaluated."""
    sequences, _ = cyclic_data(n_users=12)
    histories, targets = split_last(sequences)
    seen: list[torch.Tensor] = []
    script = iter(scores)

    def evaluate(self: SASRecScorer, h: list[list[int]], t: list[int]) -> float:
        assert self.model is not None
        if self.model.training:  # evaluation during fit, not the test's own call
            seen.append(self.model.item_emb.weight.detach().clone())
            return next(script)
        return -1.0

    monkeypatch.setattr(SASRecScorer, "evaluate", evaluate)
    config = SASRecConfig(
        hidden=8, blocks=1, heads=1, max_len=8, epochs=len(scores), eval_every=1, lr=1e-2,
        **overrides,
    )  # fmt: skip
    scorer = SASRecScorer(config, progress=False).fit(histories, 20, valid=(histories, targets))
    return scorer, seen, (histories, targets)


def test_sasrec_keeps_weights_at_the_best_smoothed_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Raw best: the spike at epoch 2. Smoothed (window 3): .1 .3 .233 .3 .25 .35 -> epoch 6.
    scores = [0.1, 0.5, 0.1, 0.3, 0.35, 0.4]
    scorer, seen, _ = scripted_fit(monkeypatch, scores, smooth_window=3, patience=4)
    np.testing.assert_allclose(
        [h["smoothed"] for h in scorer.history], [0.1, 0.3, 0.7 / 3, 0.3, 0.25, 0.35]
    )
    assert scorer.best_epoch == 6
    assert scorer.model is not None
    torch.testing.assert_close(scorer.model.item_emb.weight, seen[5])
    # The raw rule (window 1) keeps the spike's weights instead.
    raw, seen, _ = scripted_fit(monkeypatch, scores, smooth_window=1, patience=0)
    assert raw.best_epoch == 2
    torch.testing.assert_close(raw.model.item_emb.weight, seen[1])  # type: ignore[union-attr]


def test_sasrec_patience_counts_evaluations_without_a_new_smoothed_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Smoothed: .1 .3 .233 .3 .25 .35: epochs 3, 4 and 5 bring no new best (.3 ties), so
    # patience 2 stops after epoch 4 with the epoch-2 weights; patience 4 reaches epoch 6.
    scores = [0.1, 0.5, 0.1, 0.3, 0.35, 0.4]
    scorer, _, _ = scripted_fit(monkeypatch, scores, smooth_window=3, patience=2)
    assert [h["epoch"] for h in scorer.history] == [1, 2, 3, 4]
    assert scorer.best_epoch == 2
    scorer, _, _ = scripted_fit(monkeypatch, scores, smooth_window=3, patience=3)
    assert len(scorer.history) == 5
    scorer, _, _ = scripted_fit(monkeypatch, scores, smooth_window=3, patience=4)
    assert len(scorer.history) == 6 and scorer.best_epoch == 6


def test_length_pooled_batches_cover_every_window_once_with_similar_lengths() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    batches = length_pooled_order(lengths, 32, 8, torch.Generator().manual_seed(0))
    flat = torch.cat(batches).numpy()
    assert sorted(flat.tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    padded = sum(len(b) * lengths[b.numpy()].max() for b in batches)
    plain = length_pooled_order(lengths, 32, 1, torch.Generator().manual_seed(0))
    padded_plain = sum(len(b) * lengths[b.numpy()].max() for b in plain)
    assert padded < 0.7 * padded_plain  # the point of pooling: less padding computed
    assert sorted(torch.cat(plain).tolist()) == list(range(1000))


def test_sasrec_variants_differ_in_history_length_only_and_name_the_scorer() -> None:
    variants = sasrec_variants()
    assert list(variants) == ["sasrec", "sasrec-200", "sasrec-tuned"]
    assert variants["sasrec"].max_len == 50 and variants["sasrec-200"].max_len == 200
    assert replace(variants["sasrec-200"], max_len=50) == variants["sasrec"]
    assert variants["sasrec-tuned"] == TUNED
    assert SASRecScorer(variants["sasrec-200"], name="sasrec-200").name == "sasrec-200"
    assert SASRecScorer().name == "sasrec"

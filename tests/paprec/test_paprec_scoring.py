"""What PAP-REC measures: exact surrogates, target log-probabilities, HotFlip candidates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from paprec_testing import CONFIG

from promptrec.models.prompts.paprec.config import PaprecConfig
from promptrec.models.prompts.paprec.scoring import PromptScorer
from promptrec.models.ranking import encode_token_lists, item_logits, rows_per_call


def test_candidate_scores_equal_grad_dot_embedding_matrix(lm, examples):
    scorer = PromptScorer(lm, CONFIG)
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    task = scorer.ids(["the"] * 3)
    grad = scorer.trigger_gradients(batch, lambda j: task, position=1)

    # Independently: a one-hot input matrix X, embeddings X @ E, d logp / dX at the trigger row.
    weight = lm.model.get_input_embeddings().weight
    j = 0
    ids, mask = encode_token_lists(lm, [scorer.tokens(batch.base[j] + task + batch.history[j])])
    onehot = torch.nn.functional.one_hot(ids, weight.shape[0]).float().requires_grad_(True)
    logits = item_logits(lm.model, ids, mask, lm.item_token_ids(), onehot @ weight)
    logits[0, batch.exclude[j]] = float("-inf")
    logp = torch.log_softmax(logits, 1)[0, batch.targets[j]]
    (expected,) = torch.autograd.grad(logp, onehot)
    position = 1 + len(batch.base[j]) + 1  # after <s> and the template's words
    ours = scorer.candidate_scores(grad[j : j + 1])[0]
    assert torch.allclose(ours, expected[0, position, scorer.word_ids], atol=1e-5)


def test_candidates_are_words_only(lm, examples):
    scorer = PromptScorer(lm, CONFIG)
    batch = scorer.prepare(examples, examples.subset(held_out=False))
    task = scorer.ids(["the"] * 3)
    grad = scorer.trigger_gradients(batch, lambda j: task, 0).mean(0, keepdim=True)
    for token in scorer.tokens(scorer.top_candidates(grad, [task[0]])[0].tolist()):
        assert token.isalpha() and token.islower() and not token.startswith("item")


def test_scores_and_gradients_do_not_depend_on_rows_per_model_call(lm, examples):
    # Chunks pad to their own widest prompt: padding must not leak into any score.
    scorers = [PromptScorer(lm, replace(CONFIG, batch_size=size)) for size in (5, None)]
    assert scorers[1].rows_per_call == rows_per_call(lm.device) == 64  # tests run on CPU
    batches = [s.prepare(examples, examples.subset(held_out=False)) for s in scorers]
    assert len(batches[0].base) > 5
    task = scorers[0].ids(["the", "movie", "user"])
    surrogate, logp = zip(
        *(s.example_scores(b, lambda j: task) for s, b in zip(scorers, batches, strict=True)),
        strict=True,
    )
    assert np.allclose(logp[0], logp[1], atol=1e-5)
    # Ranks agree; a float tie between the target and another item may flip one of them.
    assert (surrogate[0] != surrogate[1]).sum() <= 1
    grads = [
        s.trigger_gradients(b, lambda j: task, 1) for s, b in zip(scorers, batches, strict=True)
    ]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_the_surrogate_sums_the_configured_metrics_at_any_cutoff(lm, examples):
    def surrogate(*metrics):
        scorer = PromptScorer(lm, replace(CONFIG, metrics=metrics))
        batch = scorer.prepare(examples, range(len(examples.targets)))
        return scorer.example_scores(batch, lambda j: scorer.ids(["the"] * 3))[0]

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

"""The RLM end to end on the tiny preset: tokenizer, save/load, exact ranking, train + eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptrec.models.evaluation import evaluate_rlm, user_fields
from promptrec.models.ranking import (
    encode_token_lists,
    item_logits,
    item_scorer,
    rank_items,
    top_items,
)
from promptrec.models.report import QualityOptions, quality_report
from promptrec.models.rlm import train as train_module
from promptrec.models.rlm.model import RecLM
from promptrec.models.rlm.train import TrainConfig, build_rlm, train_rlm
from promptrec.models.templates import TEMPLATES, render_text, render_tokens
from promptrec.models.user_context import ItemCatalog, user_profiles


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, data, splits):
    out = tmp_path_factory.mktemp("rlm")
    config = TrainConfig(
        preset="tiny", epochs=30, batch_size=16, lr=1e-2, warmup_steps=20, eval_every=10
    )
    train_rlm(data, splits, out, config, progress=False)
    return out


def _prompts(lm, data, splits, users, split="test"):
    catalog = ItemCatalog.build(data.items, splits)
    fields = user_fields(splits, catalog, user_profiles(data.users, splits), users, split)
    tokens = [render_tokens(TEMPLATES["seq-1"], f, lm.max_history) for f in fields]
    return fields, tokens


def test_fast_encoding_equals_the_saved_tokenizer(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    fields, tokens = _prompts(lm, data, splits, range(5))
    ids, _ = encode_token_lists(lm, tokens)
    for row, f in zip(ids, fields, strict=True):
        expected = lm.tokenizer(render_text(TEMPLATES["seq-1"], f, lm.max_history))["input_ids"]
        assert row[: len(expected)].tolist() == expected
        assert lm.tokenizer.unk_token_id not in expected


def test_every_item_is_one_token(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    ids = lm.tokenizer("item_0 item_17 item_59")["input_ids"]
    assert ids[0] == lm.tokenizer.bos_token_id
    assert ids[1:] == lm.item_token_ids()[[0, 17, 59]].tolist()


def test_ranking_excludes_history_and_respects_candidates(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    fields, tokens = _prompts(lm, data, splits, range(4))
    ids, mask = encode_token_lists(lm, tokens)
    history = [f.history for f in fields]
    scores = rank_items(lm, ids, mask, exclude=history)
    assert scores.shape == (4, splits.n_items)
    for row, seen in enumerate(history):
        assert torch.isinf(scores[row, seen]).all()
        top, _ = top_items(scores[row : row + 1], 10)
        assert not set(top[0].tolist()) & set(seen)
    candidates = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    scores = rank_items(lm, ids, mask, candidates=candidates)
    for row, allowed in enumerate(candidates):
        finite = torch.isfinite(scores[row]).nonzero().flatten().tolist()
        assert finite == sorted(allowed)
    mixed = rank_items(lm, ids, mask, candidates=[[1, 2], None, [], None])  # None: any item
    assert torch.isfinite(mixed[0]).nonzero().flatten().tolist() == [1, 2]
    assert torch.isfinite(mixed[1]).all() and torch.isfinite(mixed[3]).all()
    assert not torch.isfinite(mixed[2]).any()


def test_the_traced_ranking_graph_scores_as_the_eager_model_and_follows_its_weights(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()
    scorer = item_scorer(lm)
    assert isinstance(scorer, torch.jit.ScriptModule)  # traced, not the eager fallback
    _, tokens = _prompts(lm, data, splits, range(7))
    tokens = [t[: 5 + 3 * row] for row, t in enumerate(tokens)]  # ragged: padded rows
    with torch.inference_mode():
        for rows in (tokens, tokens[:1], tokens[2:5]):
            ids, mask = encode_token_lists(lm, rows)
            eager = item_logits(lm.model, ids, mask, lm.item_token_ids())
            torch.testing.assert_close(scorer(ids, mask), eager, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            # the graph shares the weights, so it sees this
            lm.model.transformer.wte.weight.mul_(0.5)
        ids, mask = encode_token_lists(lm, tokens)
        eager = item_logits(lm.model, ids, mask, lm.item_token_ids())
        torch.testing.assert_close(scorer(ids, mask), eager, atol=1e-5, rtol=1e-5)


def test_ranking_falls_back_to_the_eager_model_when_tracing_fails(monkeypatch, data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()

    def refuse(*_args, **_kwargs):
        raise RuntimeError("this checkpoint cannot be traced")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    scorer = item_scorer(lm)
    assert not isinstance(scorer, torch.jit.ScriptModule)
    _, tokens = _prompts(lm, data, splits, range(3))
    ids, mask = encode_token_lists(lm, tokens)
    with torch.inference_mode():
        eager = item_logits(lm.model, ids, mask, lm.item_token_ids())
        torch.testing.assert_close(scorer(ids, mask), eager)


def test_save_and_load_give_identical_rankings(tmp_path, data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()
    _, tokens = _prompts(lm, data, splits, range(8))
    before = rank_items(lm, *encode_token_lists(lm, tokens))
    lm.save(tmp_path / "m")
    loaded = RecLM.load(tmp_path / "m")
    after = rank_items(loaded, *encode_token_lists(loaded, tokens))
    assert loaded.item_ids == lm.item_ids
    assert torch.equal(before, after)
    assert loaded.fingerprint() == lm.fingerprint()


def test_a_plain_hf_checkpoint_without_promptrec_metadata_loads(tmp_path, data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = RecLM.load(tmp_path)
    assert loaded.n_items == splits.n_items


@pytest.mark.slow
def test_tiny_train_learns_and_evaluates_end_to_end(trained_dir, data, splits, tmp_path):
    trained = RecLM.load(trained_dir)
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    for group in ("warm", "cold"):
        users = splits.user_indices(group)
        ndcg = evaluate_rlm(trained, splits, catalog, profiles, users, "test", "seq-1")["NDCG@10"]
        # Random ranking of ~50 candidate items gives NDCG@10 about 0.1; the walk is learnable.
        assert ndcg.mean() > 0.3, group
    report = quality_report(
        trained_dir,
        data,
        splits,
        QualityOptions(baselines=False, sensitivity=True, speed=True, progress=False),
    )
    path = tmp_path / "q.json"
    report.write(path)
    saved = json.loads(path.read_text())
    groups = {(r["users"], r["split"], r["protocol"]) for r in saved["rows"]}
    assert ("cold", "test", "full") in groups and ("warm", "valid", "sampled") in groups
    assert saved["ranking"]["users_per_s_batched"] > 0
    assert set(saved["sensitivity"]) >= {"true_words_NDCG@10", "shuffled_words_NDCG@10"}
    assert saved["cold_stream_sensitivity"]["history_len"] == "1-5"
    (stream,) = saved["cold_stream"]["rows"]  # no baselines: the RLM's row alone
    assert stream["n_users"] == splits.cold.sum()
    assert set(stream["by_history_len"]) == {"1-5", "6-20", "21-50", ">50"}
    assert stream["metrics"]["NDCG@10"] > 0.3
    assert "HR@10" in report.table()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, data, splits, monkeypatch):
    config = TrainConfig(
        preset="tiny", epochs=4, batch_size=16, checkpoint_every=4, eval_every=2, valid_users=10
    )
    straight = train_rlm(data, splits, tmp_path / "straight", config, progress=False)

    real_collate, calls = train_module.collate, {"n": 0}

    def crash_after_ten_steps(*args):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real_collate(*args)

    monkeypatch.setattr(train_module, "collate", crash_after_ten_steps)
    with pytest.raises(KeyboardInterrupt):
        train_rlm(data, splits, tmp_path / "resumed", config, progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    monkeypatch.setattr(train_module, "collate", real_collate)
    resumed = train_rlm(data, splits, tmp_path / "resumed", config, progress=False)

    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert resumed.fingerprint() == straight.fingerprint()
    log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert any("valid_ndcg10" in json.loads(line) for line in log)
    assert np.isfinite(resumed.meta["train_result"]["valid_ndcg10"])


def test_the_loss_weighs_each_positions_next_items_as_configured(data, splits):
    from promptrec.models.rlm.corpus import IGNORE
    from promptrec.models.rlm.train import NextItemLoss

    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="tiny"))
    lm.model.eval()
    ids = torch.tensor([[lm.tokenizer.bos_token_id, *lm.item_token_ids()[[4, 5, 6]].tolist()]])
    mask = torch.ones_like(ids)
    targets = torch.tensor([[IGNORE, 5, 6, IGNORE]])  # the last item has no next one in the row
    hidden = lm.model(input_ids=ids, attention_mask=mask)[0]
    logp = torch.log_softmax(lm.model.item_logits(hidden, lm.item_token_ids()), dim=1)
    with torch.no_grad():
        one = NextItemLoss(lm.model, lm.item_token_ids())(ids, mask, targets)
        two = NextItemLoss(lm.model, lm.item_token_ids(), [1.0, 0.5])(ids, mask, targets)
    torch.testing.assert_close(one, -(logp[1, 5] + logp[2, 6]) / 2)
    # position 1 also learns item 6, at half weight; position 2 has no item after 6 here
    torch.testing.assert_close(two, ((-logp[1, 5] - 0.5 * logp[1, 6]) / 1.5 - logp[2, 6]) / 2)


def test_the_last_position_fast_path_equals_the_full_forward(data, splits):
    lm, _, _ = build_rlm(data, splits, TrainConfig(preset="small"))  # two blocks
    lm.model.eval()
    _, tokens = _prompts(lm, data, splits, range(6))
    tokens = [t[: 4 + 5 * row] for row, t in enumerate(tokens)]  # ragged: padded rows
    ids, mask = encode_token_lists(lm, tokens)
    with torch.no_grad():
        full = lm.model(input_ids=ids, attention_mask=mask)
        expected = full[torch.arange(len(ids)), mask.sum(1) - 1]
        torch.testing.assert_close(lm.model.last_hidden(ids, mask), expected, atol=1e-5, rtol=1e-5)
        embeds = lm.model.get_input_embeddings()(ids)
        fast = lm.model.last_hidden(attention_mask=mask, inputs_embeds=embeds)
        torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)

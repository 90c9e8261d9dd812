"""Training loop for the RLM: flat, resumable, seeded, with a progress bar and a JSON log."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from models.data.dataset import InteractionData
from models.data.splits import SplitConfig, Splits
from models.evaluation import evaluate_rlm
from models.ranking import item_logits, pad_rows
from models.rlm.corpus import CorpusConfig, Sample, TrainingCorpus, vocabulary_words
from models.rlm.item_init import cooccurrence_embeddings
from models.rlm.model import PRESETS, RecLM, build_t5, pick_device, preset_dict
from models.rlm.vocabulary import build_tokenizer
from models.user_context import ItemCatalog, user_profiles

CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    seed: int = 0
    max_minutes: float | None = None
    """Stop early (and keep the best epoch so far) once this much time has passed."""
    checkpoint_every: int = 200
    valid_users: int = 300
    """Warm users whose validation item picks the best epoch (test is never looked at)."""
    device: str | None = None
    item_init: bool = True
    """Start item embeddings from co-occurrence in the warm training sequences (item_init.py)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


def preset_defaults(preset: str) -> TrainConfig:
    """Budgets: `tiny` trains in well under a minute, `small` within the hour on 2 cores."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    budgets = {"tiny": (2, 0.15), "small": (8, 0.5), "base": (10, 1.0)}
    epochs, cut_fraction = budgets[preset]
    return TrainConfig(preset=preset, epochs=epochs, corpus=CorpusConfig(cut_fraction=cut_fraction))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_rlm(
    data: InteractionData, splits: Splits, config: TrainConfig
) -> tuple[RecLM, ItemCatalog, list]:
    preset = PRESETS[config.preset]
    catalog = ItemCatalog.build(data.items, splits)
    profiles = user_profiles(data.users, splits)
    tokenizer = build_tokenizer(splits.n_items, vocabulary_words(catalog, profiles))
    model = build_t5(preset, vocab_size=len(tokenizer))
    lm_items = [tokenizer.convert_tokens_to_ids(f"item_{k}") for k in range(splits.n_items)]
    if config.item_init:
        warm_train = [splits.train[u] for u in splits.user_indices("warm")]
        vectors = cooccurrence_embeddings(warm_train, splits.n_items, preset.d_model)
        with torch.no_grad():
            model.get_input_embeddings().weight[lm_items] = torch.as_tensor(vectors).float()
    meta = {"model": preset_dict(config.preset), "train": _jsonable(asdict(config))}
    lm = RecLM(model, tokenizer, list(splits.item_ids), preset.max_history, meta)
    return lm, catalog, profiles


def collate(lm: RecLM, batch: list[Sample], device: torch.device):
    vocab = lm.vocab
    unk, eos = lm.tokenizer.unk_token_id, lm.tokenizer.eos_token_id
    rows = [[vocab.get(t, unk) for t in s.tokens] + [eos] for s in batch]
    ids, mask = pad_rows(rows, lm.tokenizer.pad_token_id, device)
    target = torch.zeros((len(batch), lm.n_items))
    allowed = torch.ones((len(batch), lm.n_items), dtype=torch.bool)
    for i, s in enumerate(batch):
        target[i, s.targets] = torch.tensor(s.weights, dtype=torch.float)
        if s.candidates is not None:
            allowed[i] = False
            allowed[i, s.candidates] = True
    return ids, mask, target.to(device), allowed.to(device)


def soft_target_loss(
    logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return -(target * log_probs.masked_fill(~allowed, 0.0)).sum(dim=-1).mean()


def train_rlm(
    data: InteractionData,
    splits: Splits,
    out_dir: Path,
    config: TrainConfig = TrainConfig(),
    split_config: SplitConfig | None = None,
    progress: bool = True,
) -> RecLM:
    """Train on the warm users' training sequences; save the best-on-validation model to out_dir."""
    seed_everything(config.seed)
    device = pick_device(config.device)
    lm, catalog, profiles = build_rlm(data, splits, config)
    lm.meta["splits"] = asdict(split_config or SplitConfig())
    lm.model.to(device)
    corpus = TrainingCorpus(splits, catalog, profiles, lm.max_history, config.corpus)
    steps_per_epoch = math.ceil(
        (
            round(config.corpus.cut_fraction * len(corpus.cuts))
            + config.corpus.content_repeats * splits.n_items
        )
        / config.batch_size
    )
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        lm.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / config.warmup_steps)
            * 0.5
            * (1 + math.cos(math.pi * min(1.0, s / total_steps)))
        ),
    )
    valid_users = np.random.default_rng(config.seed).permutation(splits.user_indices("warm"))
    valid_users = valid_users[: config.valid_users]

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {"step": 0, "best_ndcg": -1.0, "elapsed": 0.0}
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        lm.model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["torch_rng"])
    log = (out_dir / TRAIN_LOG).open("a")
    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not progress,
        unit="step",
        desc=f"train {config.preset}",
        dynamic_ncols=True,
    )
    started = time.monotonic() - state["elapsed"]
    stop = False
    while state["step"] < total_steps and not stop:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        # The epoch's samples depend only on (seed, epoch): a resumed run sees the same batches.
        samples = corpus.epoch(np.random.default_rng([config.seed, epoch]))
        if offset == 0:  # mid-epoch, the checkpoint restored the dropout RNG already
            torch.manual_seed(config.seed * 1000 + epoch)
        lm.model.train()
        for b in range(offset, steps_per_epoch):
            batch = samples[b * config.batch_size : (b + 1) * config.batch_size]
            if not batch:
                break
            ids, mask, target, allowed = collate(lm, batch, device)
            logits = item_logits(lm.model, ids, mask, lm.item_token_ids())
            loss = soft_target_loss(logits.float(), target, allowed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            state["step"] += 1
            state["elapsed"] = time.monotonic() - started
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if state["step"] % 50 == 0:
                _log(
                    log,
                    step=state["step"],
                    loss=loss.item(),
                    lr=schedule.get_last_lr()[0],
                    elapsed=round(state["elapsed"], 1),
                )
            if config.max_minutes and state["elapsed"] > 60 * config.max_minutes:
                stop = True
                break
            if state["step"] % config.checkpoint_every == 0:
                _checkpoint(ckpt_path, lm, optimizer, schedule, state)
        end_of_epoch = state["step"] % steps_per_epoch == 0 or stop or state["step"] >= total_steps
        if end_of_epoch:
            lm.model.eval()
            scores = evaluate_rlm(lm, splits, catalog, profiles, valid_users, "valid", "seq-1")
            ndcg = float(scores["NDCG@10"].mean())
            _log(
                log,
                step=state["step"],
                epoch=epoch + 1,
                valid_ndcg10=round(ndcg, 5),
                valid_hr10=round(float(scores["HR@10"].mean()), 5),
                elapsed=round(state["elapsed"], 1),
            )
            bar.write(
                f"epoch {epoch + 1}: valid NDCG@10 {ndcg:.4f} ({len(valid_users)} warm users)"
            )
            if ndcg > state["best_ndcg"]:
                state["best_ndcg"] = ndcg
                lm.meta["train_result"] = {
                    "epoch": epoch + 1,
                    "step": state["step"],
                    "valid_ndcg10": ndcg,
                    "seconds": round(state["elapsed"], 1),
                    "device": str(device),
                }
                lm.save(out_dir)
            _checkpoint(ckpt_path, lm, optimizer, schedule, state)
    bar.close()
    log.close()
    lm.meta.setdefault("train_result", {})["total_seconds"] = round(state["elapsed"], 1)
    best = RecLM.load(out_dir, device=str(device))
    best.meta["train_result"]["total_seconds"] = round(state["elapsed"], 1)
    best.save(out_dir)
    ckpt_path.unlink(missing_ok=True)
    return best


def _checkpoint(path: Path, lm: RecLM, optimizer, schedule, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": lm.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "state": state,
            "torch_rng": torch.get_rng_state(),
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def _log(handle, **record) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

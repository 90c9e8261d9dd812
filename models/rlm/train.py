"""Training loop for the RLM: flat, resumable, seeded, with a progress bar and a JSON log.

Runs unchanged under `torchrun --nproc_per_node N` (DistributedDataParallel: gloo on CPU, nccl
on GPU): every process builds the same epoch, takes its share of each batch, and gradients are
averaged; process 0 evaluates, saves and checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from promptrec.models.data.dataset import InteractionData
from promptrec.models.data.splits import SplitConfig, Splits
from promptrec.models.evaluation import evaluate_rlm
from promptrec.models.ranking import bos_row, pad_rows
from promptrec.models.rlm.config import PRESETS, TrainConfig
from promptrec.models.rlm.corpus import IGNORE, Sample, TrainingCorpus, vocabulary_words
from promptrec.models.rlm.item_init import cooccurrence_embeddings
from promptrec.models.rlm.model import RecGPT, RecLM, build_gpt, pick_device, preset_dict
from promptrec.models.rlm.vocabulary import build_tokenizer
from promptrec.models.user_context import ItemCatalog, user_profiles

CHECKPOINT = "checkpoint.pt"
TRAIN_LOG = "train_log.jsonl"


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
    model = build_gpt(preset, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id)
    meta = {"model": preset_dict(config.preset), "train": _jsonable(asdict(config))}
    lm = RecLM(model, tokenizer, list(splits.item_ids), preset.max_history, meta)
    if config.item_init:
        warm_train = [splits.train[u] for u in splits.user_indices("warm")]
        vectors = cooccurrence_embeddings(warm_train, splits.n_items, preset.d_model)
        with torch.no_grad():
            embedding = model.get_input_embeddings().weight
            # at the scale of the other embeddings (GPT-2 initialises them with std 0.02)
            scale = model.config.initializer_range
            embedding[lm.item_token_ids()] = scale * torch.as_tensor(vectors).float()
    return lm, catalog, profiles


def collate(lm: RecLM, batch: list[Sample], device: torch.device):
    """(input ids, attention mask, targets) of right-padded rows `<s> prefix items`; targets
    hold item indices at the positions that predict one, IGNORE elsewhere."""
    vocab, unk = lm.vocab, lm.tokenizer.unk_token_id
    rows = [bos_row(lm, [vocab.get(t, unk) for t in s.tokens]) for s in batch]
    ids, mask = pad_rows(rows, lm.tokenizer.pad_token_id, device)
    targets = np.full(ids.shape, IGNORE, dtype=np.int64)
    for r, (row, s) in enumerate(zip(rows, batch, strict=True)):
        # the prefix's last position (<s> when the prefix is empty) predicts targets[0]
        first = len(row) - len(s.items) - 1
        targets[r, first : len(row)] = s.targets[-(len(row) - first) :]
    return ids, mask, torch.from_numpy(targets).to(device)


class TrainState(TypedDict):
    """Where a run is, checkpointed with the model (a resumed run continues from it)."""

    step: int
    best_ndcg: float  # the best validation NDCG@10 so far
    elapsed: float  # seconds of training, over all resumptions


class NextItemLoss(nn.Module):
    """Cross-entropy over the item tokens at every position that has a target, on its next
    item and (with `weights` of length J > 1) on the J - 1 items after it, weighted."""

    item_token_ids: torch.Tensor  # buffers, registered in __init__
    weights: torch.Tensor

    def __init__(
        self, model: RecGPT, item_token_ids: torch.Tensor, weights: Sequence[float] = (1.0,)
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("item_token_ids", item_token_ids, persistent=False)
        self.register_buffer("weights", torch.tensor(weights), persistent=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
        hidden = self.model(input_ids=ids, attention_mask=mask)
        at = targets != IGNORE
        logp = torch.log_softmax(self.model.item_logits(hidden[at], self.item_token_ids).float(), 1)
        total = torch.zeros(len(logp), device=logp.device)
        weight = torch.zeros_like(total)
        for j, w in enumerate(self.weights):
            # targets j steps later in the row: the (j + 1)-th next item of every position
            later = nn.functional.pad(targets[:, j:], (0, j), value=IGNORE)[at]
            valid = later != IGNORE
            total[valid] -= w * logp[valid].gather(1, later[valid, None])[:, 0]
            weight[valid] += w
        return (total / weight).mean()


def target_weights(config: TrainConfig) -> list[float]:
    return [config.next_item_decay**j for j in range(config.next_items)]


@dataclass(frozen=True)
class _Process:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _start_process_group(requested: str | None) -> tuple[_Process, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Process(), pick_device(requested)
    device = pick_device(requested)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Process(dist.get_rank(), dist.get_world_size()), device


def train_rlm(
    data: InteractionData,
    splits: Splits,
    out_dir: Path,
    config: TrainConfig | None = None,
    split_config: SplitConfig | None = None,
    progress: bool = True,
) -> RecLM:
    """Train on the warm users' training sequences; save the best-on-validation model to out_dir."""
    config = config or TrainConfig()
    process, device = _start_process_group(config.device)
    seed_everything(config.seed)
    lm, catalog, profiles = build_rlm(data, splits, config)
    lm.meta["splits"] = asdict(split_config or SplitConfig())
    lm.meta["train"]["processes"] = process.world
    # typeshed's functools.wraps result has no __get__: mypy takes transformers' wrapped `to`
    # for an unbound function whose first argument is the model.
    lm.model.to(device)  # type: ignore[arg-type]
    loss_module: nn.Module = NextItemLoss(
        lm.model, lm.item_token_ids().to(device), target_weights(config)
    )
    if process.world > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module)
    corpus = TrainingCorpus(splits, catalog, profiles, lm.max_history, config.corpus)
    steps_per_epoch = corpus.batches_per_epoch(config.batch_size)
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
    valid_users = splits.user_indices("warm")
    if config.valid_users is not None:
        valid_users = np.random.default_rng(config.seed).permutation(valid_users)
        valid_users = valid_users[: config.valid_users]

    out_dir.mkdir(parents=True, exist_ok=True)
    state: TrainState = {"step": 0, "best_ndcg": -1.0, "elapsed": 0.0}
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        lm.model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["torch_rng"])
        lm.meta["train_result"] = ckpt.get("train_result", {})
    log = (out_dir / TRAIN_LOG).open("a") if process.main else None
    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not (progress and process.main),
        unit="step",
        desc=f"train {config.preset}",
        dynamic_ncols=True,
    )
    started = time.monotonic() - state["elapsed"]
    stop = False
    while state["step"] < total_steps and not stop:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        # The epoch's samples depend only on (seed, epoch): a resumed run (and every process of
        # a distributed one) sees the same batches.
        batches = corpus.epoch(np.random.default_rng([config.seed, epoch]), config.batch_size)
        if offset == 0:  # mid-epoch, the checkpoint restored the dropout RNG already
            torch.manual_seed(config.seed * 1000 + epoch * process.world + process.rank)
        lm.model.train()
        for b in range(offset, steps_per_epoch):
            batch = batches[b][process.rank :: process.world]
            loss = loss_module(*collate(lm, batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            state["step"] += 1
            state["elapsed"] = time.monotonic() - started
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if log and state["step"] % 50 == 0:
                _log(
                    log,
                    step=state["step"],
                    loss=loss.item(),
                    lr=schedule.get_last_lr()[0],
                    elapsed=round(state["elapsed"], 1),
                )
            over_time = bool(config.max_minutes and state["elapsed"] > 60 * config.max_minutes)
            stop = _agree(process, over_time, device)
            if stop:
                break
            if process.main and state["step"] % config.checkpoint_every == 0:
                _checkpoint(ckpt_path, lm, optimizer, schedule, state)
        done = state["step"] >= total_steps
        end_of_epoch = state["step"] % steps_per_epoch == 0 or stop or done
        if process.main and end_of_epoch and ((epoch + 1) % config.eval_every == 0 or stop or done):
            scores = _validate(lm, splits, catalog, profiles, valid_users)
            _log(
                log,
                step=state["step"],
                epoch=epoch + 1,
                elapsed=round(state["elapsed"], 1),
                **scores,
            )
            bar.write(f"epoch {epoch + 1}: valid NDCG@10 {scores['valid_ndcg10']:.4f}")
            if scores["valid_ndcg10"] > state["best_ndcg"]:
                state["best_ndcg"] = scores["valid_ndcg10"]
                lm.meta["train_result"] = {
                    "epoch": epoch + 1,
                    "step": state["step"],
                    "valid_ndcg10": scores["valid_ndcg10"],
                    "seconds": round(state["elapsed"], 1),
                    "device": str(device),
                }
                lm.save(out_dir)
            _checkpoint(ckpt_path, lm, optimizer, schedule, state)
        if process.world > 1:
            dist.barrier()
    bar.close()
    if log:
        log.close()
    if process.world > 1:
        dist.barrier()
    best = RecLM.load(out_dir, device=str(device))
    if process.main:
        best.meta["train_result"]["total_seconds"] = round(state["elapsed"], 1)
        best.save(out_dir)
        ckpt_path.unlink(missing_ok=True)
    return best


def _validate(lm: RecLM, splits, catalog, profiles, users) -> dict[str, float]:
    lm.model.eval()
    scores = evaluate_rlm(lm, splits, catalog, profiles, users, "valid", "seq-1")
    return {
        "valid_ndcg10": round(float(scores["NDCG@10"].mean()), 5),
        "valid_hr10": round(float(scores["HR@10"].mean()), 5),
    }


def _agree(process: _Process, flag: bool, device: torch.device) -> bool:
    """One process's stop decision (a time budget) taken by all, so none waits forever."""
    if process.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _checkpoint(path: Path, lm: RecLM, optimizer, schedule, state: TrainState) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": lm.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "state": state,
            "torch_rng": torch.get_rng_state(),
            "train_result": lm.meta.get("train_result", {}),
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def _log(handle, **record) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

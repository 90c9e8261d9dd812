"""Prompt tuning of the pool and composer on the frozen RLM, on warm users' training sequences.

The data are selection examples (`models.prompts.selection`: each prediction with the prompt
fields of the history before it). A sample is a user at one of their predictions t: the soft
prompt is composed from the history before t (interest embedding, words), and the loss is the
next-item cross-entropy of the next HORIZON predictions (teacher-forced), as a worker's prompt
is used for the events that follow its search. The words state the taste of the items before t
only, so no target is summarised in the prompt. The epoch kept is the one whose
composed prompts score best on held-out predictions (the CLI: every user's validation item;
test is never looked at).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from promptrec.models.metrics import per_user_metrics, target_ranks
from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.prompts.soft.composer import (
    SoftComposer,
    check_template,
    interest,
    soft_item_logits,
    teacher_forced_ce,
)
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields

HORIZON = 10  # the events a searched prompt serves before the worker looks at the user again


@dataclass
class TuningLog:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    plain_valid_ndcg: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "plain_valid_ndcg10": self.plain_valid_ndcg,
            "seconds": round(self.seconds, 1),
        }


@dataclass
class _Sample:
    fields: PromptFields  # history before t, with its words
    items: list[int]  # teacher-forced input after the prompt's history
    targets: list[int]


@dataclass
class Validation:
    """Held-out predictions the kept epoch is chosen on: the prompt fields and the target."""

    fields: list[PromptFields]
    targets: list[int]


def _windows(examples: SearchExamples) -> list[list[int]]:
    """Per user: their search examples' indices, oldest first (consecutive predictions)."""
    return [[j for j in js if not examples.held_out[j]] for js in examples.by_user()]


def _samples(
    examples: SearchExamples, windows: list[list[int]], rng: np.random.Generator, per_user: int
) -> list[_Sample]:
    out = []
    for js in windows:
        starts = [i for i, j in enumerate(js) if examples.fields[j].history]
        if not starts:
            continue
        for i in rng.choice(starts, size=per_user).tolist():
            targets = [examples.targets[j] for j in js[i : i + HORIZON]]
            out.append(_Sample(examples.fields[js[i]], targets[:-1], targets))
    return out


def _batch_loss(
    lm: RecLM, composer: SoftComposer, batch: list[_Sample], config: SoftConfig
) -> torch.Tensor:
    """Cross-entropy of each sample's targets, the first predicted from the prompt's history,
    the others from the teacher-forced items after it (one pass, every position)."""
    prompts = [s.fields for s in batch]
    vectors = composer(interest(lm, prompts, config))
    ce, _ = teacher_forced_ce(
        lm, prompts, [s.items for s in batch], [s.targets for s in batch], vectors, config.template
    )
    return ce.mean()


@torch.inference_mode()
def validation_ndcg(
    lm: RecLM, composer: SoftComposer | None, validation: Validation, config: SoftConfig
) -> float:
    """Mean NDCG@10 of the validation targets (history items excluded), composed prompts
    (None: the plain prompts)."""
    scores = []
    for lo in range(0, len(validation.fields), 64):
        chunk = validation.fields[lo : lo + 64]
        vectors = composer(interest(lm, chunk, config)) if composer is not None else None
        scores.append(soft_item_logits(lm, chunk, vectors, config.template).float().cpu().numpy())
    ranks = target_ranks(
        np.concatenate(scores),
        np.asarray(validation.targets),
        exclude=[f.history for f in validation.fields],
    )
    return float(per_user_metrics(ranks)["NDCG@10"].mean())


def tune_composer(
    lm: RecLM,
    examples: SearchExamples,
    validation: Validation,
    config: SoftConfig | None = None,
    progress: bool = True,
) -> tuple[SoftComposer, TuningLog]:
    """The pool and composer tuned with the RLM frozen on the search examples of `examples`
    (consecutive predictions per user: `tune_samples_per_user` samples of up to HORIZON of
    them per user and epoch); the epoch kept is the best on `validation`."""
    config = config or SoftConfig()
    check_template(config.template, config.n_vectors)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 19])
    windows = _windows(examples)
    if config.train_users is not None and config.train_users < len(windows):
        chosen = rng.choice(len(windows), size=config.train_users, replace=False)
        windows = [windows[i] for i in np.sort(chosen)]

    lm.model.eval()
    for p in lm.model.parameters():
        p.requires_grad_(False)
    composer = SoftComposer(lm.model.config.n_embd, config.pool_size, config.n_vectors)
    composer = composer.to(lm.device)
    optimizer = torch.optim.AdamW(
        composer.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    log = TuningLog(plain_valid_ndcg=round(validation_ndcg(lm, None, validation, config), 5))
    best = (validation_ndcg(lm, composer, validation, config), 0)
    best_state = {k: v.clone() for k, v in composer.state_dict().items()}
    log.epochs.append({"epoch": 0, "valid_ndcg10": round(best[0], 5)})
    for epoch in range(1, config.epochs + 1):
        samples = _samples(examples, windows, rng, config.tune_samples_per_user)
        order = rng.permutation(len(samples))
        batches = [
            [samples[i] for i in order[lo : lo + config.batch_size]]
            for lo in range(0, len(order), config.batch_size)
        ]
        composer.train()
        total = 0.0
        bar = tqdm(batches, desc=f"soft prompt epoch {epoch}", unit="batch", disable=not progress)
        for batch in bar:
            loss = _batch_loss(lm, composer, batch, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f"{total / (bar.n + 1):.3f}")
        composer.eval()
        ndcg = validation_ndcg(lm, composer, validation, config)
        log.epochs.append(
            {"epoch": epoch, "loss": round(total / len(batches), 4), "valid_ndcg10": round(ndcg, 5)}
        )
        if ndcg > best[0]:
            best = (ndcg, epoch)
            best_state = {k: v.clone() for k, v in composer.state_dict().items()}
    composer.load_state_dict(best_state)
    log.best_epoch = best[1]
    log.seconds = time.perf_counter() - started
    return composer.eval(), log

"""The incremental gradient search a worker runs: each user's soft prompt starts from its
composition and takes a few gradient steps on the user's own state with the RLM frozen, batched
over many users; it is early-stopped and kept only by the user's held-out last interactions.

A user's selection examples (their last `fit_window` + `held_out_per_user` items, each with the
prompt fields of the history before it) are split: the most recent `held_out_per_user` are held
out; the fit's loss is the next-item cross-entropy of the others, in one teacher-forced pass
from the prompt of the oldest (words included, built on the items before the window), so the
loss never predicts an item the prompt's taste words summarise. What moves is a residual on the
user's composed vectors, with an L2 penalty on it. (Re-weighting the user's composition over the
pool instead changed nothing measurable: the tuned components are small offsets.) The residual
with the best held-out mean log-probability among the checks is kept if it beats the composed
prompt there; it is then added to the composition from the user's whole history, which is what
they are served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptrec.models.prompts.selection import SearchExamples
from promptrec.models.prompts.soft.composer import (
    SoftComposer,
    interest,
    mean_target_logp,
    teacher_forced_ce,
)
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import PromptFields

TOP_COMPONENTS = 3  # pool components shown per user (largest mean composition weight)


@dataclass
class FitOutcome:
    vectors: np.ndarray
    """[k, d] float32: what the user is served (composed from their whole history, plus the
    fitted change where it was kept)."""
    components: list[tuple[int, float]]
    """The pool components with the largest mean composition weight, with that weight."""
    before: float | None
    """Held-out mean log-probability of the composed prompt (None: too short to fit)."""
    after: float | None
    """The same for the best fitted check."""
    kept: bool
    steps: int
    """Gradient steps of the kept check (0: not kept)."""

    @property
    def gain(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


@dataclass
class _User:
    fit: PromptFields  # the prompt before the fit window (its words from that history only)
    items: list[int]  # teacher-forced window items
    targets: list[int]
    held_out: list[tuple[PromptFields, int]]


def _users(examples: SearchExamples) -> list[_User | None]:
    """Per user of `examples`: the fit window (their search examples, oldest first: the first
    one's prompt, then every search target) and their held-out examples; None for a user
    without both."""
    out: list[_User | None] = []
    for js in examples.by_user():
        search = [j for j in js if not examples.held_out[j]]
        held = [j for j in js if examples.held_out[j]]
        if not search or not held or not examples.fields[search[0]].history:
            out.append(None)
            continue
        targets = [examples.targets[j] for j in search]
        out.append(
            _User(
                examples.fields[search[0]],
                targets[:-1],
                targets,
                [(examples.fields[j], examples.targets[j]) for j in held],
            )
        )
    return out


def _sequence_loss(
    lm: RecLM, users: list[_User], vectors: torch.Tensor, template: str
) -> torch.Tensor:
    """[B] each user's mean next-item cross-entropy over their fit window (one pass)."""
    ce, rows = teacher_forced_ce(
        lm,
        [u.fit for u in users],
        [u.items for u in users],
        [u.targets for u in users],
        vectors,
        template,
    )
    total = torch.zeros(len(users), device=ce.device).index_add(0, rows, ce)
    count = torch.zeros(len(users), device=ce.device).index_add(0, rows, torch.ones_like(ce))
    return total / count


def held_out_logp(
    lm: RecLM, users: list[_User], vectors: torch.Tensor, template: str
) -> np.ndarray:
    """[B] each user's mean log-probability of their held-out items with these vectors."""
    rows = [(r, f, target) for r, u in enumerate(users) for f, target in u.held_out]
    return mean_target_logp(
        lm,
        [f for _, f, _ in rows],
        [t for _, _, t in rows],
        [r for r, _, _ in rows],
        vectors,
        template,
    )


def _check_steps(config: SoftConfig) -> set[int]:
    if config.fit_checks == 0 or config.fit_steps == 0:
        return set()
    return {
        max(1, round(c * config.fit_steps / config.fit_checks))
        for c in range(1, config.fit_checks + 1)
    }


def _fit_batch(
    lm: RecLM, composer: SoftComposer, users: list[_User], config: SoftConfig
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """(best residual per user [B, k, d], held-out log-probability before and with it, steps
    of the best check; 0 where no check beat the composed prompt, whose residual is zero)."""
    with torch.no_grad():
        base = composer(interest(lm, [u.fit for u in users], config))
    residual = torch.zeros_like(base, requires_grad=True)
    before = held_out_logp(lm, users, base, config.template)
    best, best_after = torch.zeros_like(base), before.copy()
    best_steps = np.zeros(len(users), dtype=np.int64)
    optimizer = torch.optim.Adam([residual], lr=config.fit_lr)
    checks = _check_steps(config)
    for step in range(1, config.fit_steps + 1):
        loss = _sequence_loss(lm, users, base + residual, config.template)
        penalty = residual.pow(2).flatten(1).sum(1)
        optimizer.zero_grad()
        # a sum of per-user terms: each user's residual gets only their own gradient
        (loss + config.fit_l2 * penalty).sum().backward()
        optimizer.step()
        if step in checks:
            after = held_out_logp(lm, users, (base + residual).detach(), config.template)
            better = after > best_after
            best[torch.from_numpy(better).to(best.device)] = residual.detach()[better]
            best_after[better], best_steps[better] = after[better], step
    return best, before, best_after, best_steps


def _fit_chunk(
    lm: RecLM,
    composer: SoftComposer,
    parts: list[_User | None],
    current: Sequence[PromptFields],
    config: SoftConfig,
) -> list[FitOutcome]:
    with torch.no_grad():
        logits = composer.logits(interest(lm, current, config))
        vectors = composer.compose(logits)
    rows = [r for r, part in enumerate(parts) if part is not None]
    fitted: dict[int, tuple[float, float, int]] = {}
    if rows:
        best, before, after, steps = _fit_batch(
            lm, composer, [p for p in parts if p is not None], config
        )
        vectors[rows] += best  # zero where nothing was kept
        fitted = {r: (float(before[j]), float(after[j]), int(steps[j])) for j, r in enumerate(rows)}
    weights = torch.softmax(logits, -1).mean(1)
    top = torch.topk(weights, min(TOP_COMPONENTS, weights.shape[1]), dim=1)
    out = []
    for r in range(len(parts)):
        before_r, after_r, steps_r = fitted.get(r, (None, None, 0))
        out.append(
            FitOutcome(
                vectors=vectors[r].float().cpu().numpy(),
                components=[
                    (int(i), round(float(w), 4))
                    for i, w in zip(top.indices[r].tolist(), top.values[r].tolist(), strict=True)
                ],
                before=None if before_r is None else round(before_r, 5),
                after=None if after_r is None else round(after_r, 5),
                kept=steps_r > 0,
                steps=steps_r,
            )
        )
    return out


def fit_users(
    lm: RecLM,
    composer: SoftComposer,
    examples: SearchExamples,
    current: Sequence[PromptFields],
    config: SoftConfig,
) -> list[FitOutcome]:
    """Each user's served soft prompt: composed from `current` (their prompt fields now), plus
    their residual fitted on `examples` (`SoftConfig.selection_per_user` per user) where it won
    on their held-out items. Batched `fit_batch` users at a time; the RLM and the composer are
    not changed (their weights are frozen for the fit)."""
    if len(current) != len(examples.users):
        raise ValueError("one current prompt per user of the examples")
    lm.model.eval()
    composer.eval()
    for p in [*lm.model.parameters(), *composer.parameters()]:
        p.requires_grad_(False)
    parts = _users(examples)
    out: list[FitOutcome] = []
    for lo in range(0, len(parts), config.fit_batch):
        hi = lo + config.fit_batch
        out += _fit_chunk(lm, composer, parts[lo:hi], current[lo:hi], config)
    return out

"""Per-user refinement of the policy's choice (the incremental mode a worker runs): a few
episodes on the user's own search items, and the refined choice kept only if it also wins on
the user's held-out items.

Each user gets logit offsets on top of the policy's logits (zero at first). An episode samples a
few choices from the user's current distribution, scores them on the user's search items, and
moves the offsets along the policy gradient with the episode's mean reward as the baseline.
The candidate is the best choice any episode scored (higher metric, then higher target
log-probability). It replaces the policy's choice only as PAP-REC's personal tokens replace the
task prompt: a strictly higher metric on the search items and a higher target log-probability on
the held-out items.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from promptrec.models.prompts.rpp.config import RppConfig
from promptrec.models.prompts.rpp.rewards import RewardCache
from promptrec.models.prompts.rpp.slots import Choice


@dataclass
class Refinement:
    """One user's refinement: the policy's choice, the best one found, and whether it is kept."""

    policy_choice: Choice
    candidate: Choice
    search_before: float
    search_after: float
    held_out_logp_before: float
    held_out_logp_after: float
    kept: bool
    tried: int
    """Distinct choices scored for the user."""

    @property
    def choice(self) -> Choice:
        return self.candidate if self.kept else self.policy_choice


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def user_seed(name: str) -> int:
    """A user's own random stream: a refinement does not depend on who it is batched with."""
    return zlib.crc32(name.encode())


def _draws(names: Sequence[str], slots: int, config: RppConfig) -> np.ndarray:
    """[users, episodes, samples, slots] uniforms, each user's from their own seeded stream."""
    shape = (config.refine_episodes, config.refine_samples, slots)
    out = np.zeros((len(names), *shape))
    for i, name in enumerate(names):
        out[i] = np.random.default_rng([config.seed, user_seed(name)]).random(shape)
    return out


def refine(
    cache: RewardCache,
    users: Sequence[int],
    logits: Sequence[np.ndarray],
    policy_choices: Sequence[Choice],
    config: RppConfig,
) -> list[Refinement]:
    """Refine `users` (indices into `cache`'s examples) together; `logits[k]` is the policy's
    [len(users), alternatives] logits of slot k, `policy_choices` its choices for them."""
    n = len(users)
    draws = _draws([cache.examples.users[u] for u in users], len(logits), config)
    offsets = [np.zeros_like(np.asarray(lg, dtype=np.float64)) for lg in logits]
    own, own_logp = cache.rewards(users, policy_choices)
    best = [(float(own[i]), float(own_logp[i]), tuple(policy_choices[i])) for i in range(n)]
    tried: list[set[Choice]] = [{tuple(c)} for c in policy_choices]
    for episode in range(config.refine_episodes):
        probs = [_softmax(np.asarray(lg) + off) for lg, off in zip(logits, offsets, strict=True)]
        # [users, samples] per slot, drawn by inverse CDF
        picks = [
            (p.cumsum(1)[:, None, :] < draws[:, episode, :, k, None]).sum(2)
            for k, p in enumerate(probs)
        ]
        picks = [np.minimum(k, p.shape[1] - 1) for k, p in zip(picks, probs, strict=True)]
        flat_users = [u for u in users for _ in range(config.refine_samples)]
        flat = [
            tuple(int(k[i, s]) for k in picks)
            for i in range(n)
            for s in range(config.refine_samples)
        ]
        values, logps = cache.rewards(flat_users, flat)
        values = values.reshape(n, config.refine_samples)
        logps = logps.reshape(n, config.refine_samples)
        advantage = values - values.mean(1, keepdims=True)
        for k, (p, off) in enumerate(zip(probs, offsets, strict=True)):
            onehot = np.eye(p.shape[1])[picks[k]]  # [users, samples, alternatives]
            grad = (advantage[:, :, None] * (onehot - p[:, None, :])).mean(1)
            off += config.refine_lr * grad
        for i in range(n):
            for s in range(config.refine_samples):
                c = flat[i * config.refine_samples + s]
                tried[i].add(c)
                if (values[i, s], logps[i, s]) > best[i][:2]:
                    best[i] = (float(values[i, s]), float(logps[i, s]), c)
    candidates = [b[2] for b in best]
    _, held_before = _held_out(cache, users, policy_choices)
    _, held_after = _held_out(cache, users, candidates)
    out = []
    for i in range(n):
        kept = bool(
            best[i][0] > own[i]
            and held_after[i] > held_before[i]
            and candidates[i] != tuple(policy_choices[i])
        )
        out.append(
            Refinement(
                policy_choice=tuple(policy_choices[i]),
                candidate=candidates[i],
                search_before=round(float(own[i]), 5),
                search_after=round(best[i][0], 5),
                held_out_logp_before=round(float(held_before[i]), 5),
                held_out_logp_after=round(float(held_after[i]), 5),
                kept=kept,
                tried=len(tried[i]),
            )
        )
    return out


def _held_out(
    cache: RewardCache, users: Sequence[int], choices: Sequence[Choice]
) -> tuple[np.ndarray, np.ndarray]:
    """(metric, log-probability) on each user's held-out items; on the search items for a user
    without held-out items (as PAP-REC's keep rule)."""
    held = [cache.has_examples(u, "held_out") for u in users]
    h_values, h_logp = cache.rewards(users, choices, "held_out")
    s_values, s_logp = cache.rewards(users, choices)
    return np.where(held, h_values, s_values), np.where(held, h_logp, s_logp)

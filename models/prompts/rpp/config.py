"""RPP search settings: the policy's size, its training and the per-user refinement."""

from __future__ import annotations

from dataclasses import dataclass

from promptrec.models.metrics import parse_metric


@dataclass(frozen=True)
class RppConfig:
    reward_metric: str = "NDCG@10"
    """A user's reward: this metric of the chosen prompt, averaged over their selection items,
    minus the same for the plain served prompt (a per-user baseline)."""
    selection_per_user: int = 4
    """Each user's last few training interactions used as selection examples."""
    held_out_per_user: int = 1
    """Of those, the most recent ones kept out of the per-user refinement, to decide whether the
    refined choice is kept (the policy is trained on all of them)."""
    train_users: int | None = None
    """Warm users the policy is trained on (a seeded sample; None: all of them)."""
    hidden: int = 32
    """Width of each agent's actor and critic MLP."""
    iterations: int = 300
    """Policy updates; each samples a choice for every training user (`batch_users` at a time)."""
    batch_users: int = 256
    """Users per update."""
    check_share: float = 0.2
    """Share of the training users kept out of the updates: the policy kept is the one (of the
    start and every `check_every` iterations) whose own choices score best on them."""
    check_every: int = 10
    prior_logit: float = 2.0
    """Every actor starts state-blind with this logit on the served prompt's alternative (0 on
    the others): the policy leaves the served prompt only where the rewards lead it."""
    lr: float = 3e-3
    weight_decay: float = 1e-4
    entropy: float = 0.01
    """Weight of each actor's entropy bonus: keeps exploring while the rewards are noisy."""
    refine_episodes: int = 4
    """Per-user refinement: episodes on the user's own search items (0: no refinement)."""
    refine_samples: int = 8
    """Choices sampled per refinement episode, from the user's current distribution."""
    refine_lr: float = 1.0
    """Step size of the per-user logit offsets in refinement."""
    batch_size: int | None = None
    """Prompts per model call; None: `models.ranking.rows_per_call` for the model's device."""
    seed: int = 0

    def __post_init__(self) -> None:
        parse_metric(self.reward_metric)
        if self.selection_per_user < 1:
            raise ValueError("selection_per_user must be at least 1")
        if not 0 <= self.held_out_per_user < self.selection_per_user:
            raise ValueError("held_out_per_user must be below selection_per_user")
        if not 0 <= self.check_share < 1:
            raise ValueError("check_share must be in [0, 1)")
        for name in ("hidden", "iterations", "batch_users", "check_every", "refine_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.refine_episodes < 0:
            raise ValueError("refine_episodes must not be negative")

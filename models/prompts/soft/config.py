"""Soft-prompt settings: the pool and composer, their prompt tuning, and the per-user fit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SoftConfig:
    pool_size: int = 32
    """Shared prompt components every user's vectors are composed from."""
    n_vectors: int = 8
    """Soft prompt vectors: added to the input embeddings of the template's last k words, the
    slots right before the history (`composer.py`). 8 beat 4 on validation after the fit
    (bench/results/soft_tune.json; within noise before it)."""
    interest_items: int = 50
    """The most recent items whose mean item embedding joins the RLM's last hidden state in the
    user's interest embedding (a bag-of-items view beside the sequential one)."""
    template: str = "seq-1"
    """The manual template the soft prompt is tuned and served with (the served one)."""
    # prompt tuning of the pool and composer (RLM frozen)
    epochs: int = 12
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    tune_history: int = 200
    """Each warm user's most recent training predictions the composer is tuned on."""
    tune_samples_per_user: int = 4
    """Samples (a prediction and the HORIZON after it) per user and epoch."""
    train_users: int | None = None
    """Warm users the composer is tuned on (a seeded sample; None: all of them)."""
    # per-user fit (the worker's incremental gradient search)
    # Chosen on all users' validation items (bench/results/soft_tune.json, 6 settings in all:
    # lr .05/.2/.5, l2 1/.1, 10 or 20 steps, k 4 or 8): the best with 10 steps; every setting
    # within +-.002 of the others, all CIs against the plain prompt across zero.
    fit_steps: int = 10
    fit_lr: float = 0.2
    fit_l2: float = 0.1
    """Penalty on the squared size of the user's residual on their composed vectors."""
    fit_window: int = 30
    """The fit's loss covers the user's last this-many transitions before the held-out ones."""
    fit_checks: int = 2
    """Held-out evaluations during the fit (plus the start); the best is kept (early stop)."""
    held_out_per_user: int = 3
    """The user's most recent items kept out of the fit; the fitted vectors are kept only if
    they predict these better (mean log-probability) than the composed ones."""
    fit_batch: int = 64
    """Users fitted together in one batched call."""
    seed: int = 0

    @property
    def selection_per_user(self) -> int:
        """Selection examples per user (`models.prompts.selection`): the fit window and the
        held-out items."""
        return self.fit_window + self.held_out_per_user

    def __post_init__(self) -> None:
        for name in ("pool_size", "n_vectors", "interest_items", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        for name in (
            "fit_window",
            "fit_batch",
            "held_out_per_user",
            "tune_history",
            "tune_samples_per_user",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.fit_steps < 0 or self.fit_checks < 0:
            raise ValueError("fit_steps and fit_checks must not be negative")
        if self.fit_lr <= 0 or self.lr <= 0 or self.fit_l2 < 0:
            raise ValueError("learning rates must be positive and fit_l2 non-negative")

"""PAP-REC search settings."""

from __future__ import annotations

from dataclasses import dataclass

from promptrec.models.metrics import parse_metric


@dataclass(frozen=True)
class PaprecConfig:
    template: str = "seq-1"
    """Manual template that fills the history part; triggers follow it. The default is the
    best manual template on validation, the one the service serves."""
    task_tokens: int = 5
    """m: trigger tokens shared by every user of the task."""
    personal_tokens: int = 2
    """d: trigger tokens per user, after the task tokens."""
    init_token: str = "the"
    """Word every trigger starts as."""
    candidates: int = 5
    """k: candidates per trigger position, the top-k of grad . E^T over the word vocabulary."""
    metrics: tuple[str, ...] = ("NDCG@10", "HR@10")
    """Surrogate: the sum of these (HR@k or NDCG@k, any cutoff k), computed by exact ranking on
    the selection examples."""
    personal_candidates: int | None = None
    """k of the personal rounds; None: `candidates`."""
    personal_metrics: tuple[str, ...] | None = None
    """Surrogate of the personal rounds, of a user's keep decision and of the drift check;
    None: `metrics` (the settings tried: README, "Prompt search")."""
    selection_per_user: int = 4
    """Each user's last few training interactions used as selection examples."""
    held_out_per_user: int = 1
    """Of those, the most recent ones kept out of the search to decide keep/discard."""
    task_users: int = 400
    """Users whose selection examples drive the task-level search (a seeded sample)."""
    screen_fraction: float | None = 0.125
    """Task rounds race their candidates: all of them are first scored together on this seeded
    share of the selection examples, and only the best `screen_promote` that beat the current
    prompt there are also scored on the other examples (acceptance stays exact: strictly better
    on all of them). None scores every candidate on every example, as the original PAP-REC loop
    does."""
    screen_min_examples: int = 64
    """Screening needs at least this many examples; smaller selection sets are not screened."""
    screen_promote: int = 1
    """At most this many screened candidates per round, best first, are scored on all examples."""
    recheck_fraction: float | None = 0.375
    """A screened finalist is next scored up to this share of the examples (the screen
    included) and goes on to the rest only if it still beats the current prompt on all the
    examples scored so far: a screening lead that was luck costs a short pass, not the long one.
    None (or a share no larger than the screen's) goes straight to the rest."""
    max_cycles: int = 3
    """A cycle is one round per trigger position; stop early when a cycle accepts nothing."""
    max_seconds: float | None = None
    batch_size: int | None = None
    """Examples per model call; None: `models.ranking.rows_per_call` for the model's device
    (64 on CPU, where a call's activations then stay small enough for freed memory to be
    reused instead of page-faulted in anew; large on a GPU)."""
    seed: int = 0

    @property
    def personal_k(self) -> int:
        """k of the personal rounds, `personal_candidates` resolved."""
        return self.personal_candidates or self.candidates

    @property
    def personal_surrogate(self) -> tuple[str, ...]:
        """Metrics of the personal surrogate, `personal_metrics` resolved."""
        return self.personal_metrics or self.metrics

    def __post_init__(self) -> None:
        for metrics in (self.metrics, self.personal_metrics):
            if metrics is not None and not metrics:
                raise ValueError("a surrogate needs at least one metric")
            for name in metrics or ():
                parse_metric(name)
        for k in (self.candidates, self.personal_candidates):
            if k is not None and k < 1:
                raise ValueError(f"candidates must be at least 1, not {k}")

"""Settings of the RLM and its training: plain dataclasses (no torch), read by the CLI for its
defaults and stored in each model's promptrec.json."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    d_model: int
    d_ff: int
    num_layers: int
    num_heads: int
    max_history: int  # history items shown in a prompt (the most recent ones)
    max_prefix: int = 64  # prompt words before the history (template, fields, triggers)
    dropout: float = 0.2

    @property
    def positions(self) -> int:
        return 1 + self.max_prefix + self.max_history  # <s>, prefix, history


PRESETS: dict[str, Preset] = {
    "tiny": Preset(d_model=32, d_ff=64, num_layers=1, num_heads=2, max_history=20),
    "small": Preset(d_model=64, d_ff=256, num_layers=2, num_heads=2, max_history=200),
    "base": Preset(d_model=128, d_ff=512, num_layers=3, num_heads=4, max_history=200),
}


@dataclass(frozen=True)
class CorpusConfig:
    field_drop: float = 0.3
    """Probability that the profile, and independently the taste, is left out of a window."""
    taste_cut_max: int = 20
    """A window's taste summarises the items before a cut among its first this-many items."""
    content_repeats: int = 1
    """Item content documents (title and genre words -> item token) per item per epoch."""

    def __post_init__(self) -> None:
        if not 0 <= self.field_drop <= 1:
            raise ValueError(f"field drop must be in [0, 1], not {self.field_drop}")
        if self.taste_cut_max < 1:
            raise ValueError(f"taste cut max must be at least 1, not {self.taste_cut_max}")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    seed: int = 0
    max_minutes: float | None = None
    """Stop early (and keep the best evaluation so far) once this much time has passed."""
    checkpoint_every: int = 200
    eval_every: int = 5
    """Epochs between validation checks (and after the last epoch)."""
    valid_users: int | None = None
    """Warm users whose validation item picks the best check (None: all of them; test is
    never looked at). All 754 of ML-100k make the choice steadier than a sample."""
    device: str | None = None
    next_items: int = 1
    """Each position is trained on its next `next_items` items, the j-th weighted
    next_item_decay ** j (normalised): in data rated in sessions (MovieLens), the order of the
    next few items is partly arbitrary, and the items shortly after are as telling a target."""
    next_item_decay: float = 0.5
    item_init: bool = True
    """Start item embeddings from co-occurrence in the warm training sequences (item_init.py)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    def __post_init__(self) -> None:
        if self.next_items < 1:
            raise ValueError(f"next items must be at least 1, not {self.next_items}")
        if not 0 < self.next_item_decay <= 1:
            raise ValueError(f"next item decay must be in (0, 1], not {self.next_item_decay}")


def preset_defaults(preset: str) -> TrainConfig:
    """Budgets: `tiny` trains in well under a minute, `small` within half an hour on 2 cores."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    epochs = {"tiny": 10, "small": 50, "base": 50}[preset]
    return TrainConfig(preset=preset, epochs=epochs)

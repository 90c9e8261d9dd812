"""SASRec baseline — a compact re-implementation, not the authors' code.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018: a causal self-attention
Transformer over item embeddings plus learned position embeddings, whose output at position t
is matched (dot product with the shared item embedding table) against the item at t + 1.

Deliberate differences from the paper, as in recent reproductions:
  * Loss: full softmax cross-entropy over ALL items at every position, instead of binary
    cross-entropy with one sampled negative. This is markedly stronger, so it is the fairer
    baseline to beat.
  * Blocks are `torch.nn.TransformerEncoderLayer(norm_first=True)` (pre-LayerNorm; ReLU
    feed-forward of width `hidden`, as in the paper) plus a final LayerNorm; AdamW optimiser.
  * Sequences are RIGHT-padded: with a causal mask no real position can attend to padding,
    so no key-padding mask is needed. Position 0 is the oldest item of the (truncated) window.
  * Batches are cut from shuffled pools of windows sorted by length (`length_pool`), so a batch
    of short windows is not padded to max_len: ~2x less compute at max_len 200, same data.

Epoch selection (why it is smoothed): single validation evaluations of 754 users are noisy
(NDCG@10 moves by ~.005 between neighbouring evaluations), so "best raw score, stop after 3
evaluations without a new best" stopped at epoch 40 while the curve still rose at 60, and
picked a lucky spike. Here the score of an evaluation is the mean of the last `smooth_window`
raw scores; patience counts evaluations without a new best smoothed score, and the weights kept
are those at the evaluation that ends the best smoothed window.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from promptrec.models.metrics import ndcg, target_ranks

PAD = 0  # embedding row 0 is padding; item i is embedded at row i + 1


@dataclass(frozen=True)
class SASRecConfig:
    hidden: int = 128
    """Embedding and model width (chosen on warm validation: README, "Baselines")."""
    blocks: int = 2
    """Number of Transformer blocks."""
    heads: int = 2
    """Attention heads per block."""
    max_len: int = 50
    """Longest input the model sees; training windows hold max_len + 1 items (the RLM: 200)."""
    dropout: float = 0.2
    """Dropout on embeddings, attention and feed-forward layers."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 128
    """Training windows per step."""
    epochs: int = 200
    """Maximum number of passes over the training windows; with a validation set the smoothed
    early stop ends training long before (80 cut it short: validation still rose at 60)."""
    max_windows: int = 0
    """Windows per sequence, newest first (0: cut the whole sequence into windows)."""
    length_pool: int = 8
    """Batches are cut from pools of this many batches' windows sorted by length (pools and
    batches both shuffled); 1: plain random batches."""
    eval_every: int = 5
    """With a validation set: evaluate NDCG@10 every this many epochs (and after the last)."""
    smooth_window: int = 3
    """Selection score = mean of the last this many validation evaluations (1: the raw score)."""
    patience: int = 4
    """Stop after this many evaluations without a new best selection score (0: never stop)."""
    eval_batch_size: int = 512
    """Histories per forward pass in `score`."""
    seed: int = 0
    """Seeds parameter init, dropout and shuffling."""
    device: str | None = None
    """Torch device; None picks cuda when available, else cpu."""
    cpu_threads: int | None = 1
    """torch intra-op threads on CPU during fit/score (restored after); None leaves torch's.
    The model is small: one thread costs little when the cores are free, and multi-thread
    OpenMP barriers stall badly (measured ~7x slower) when other processes share the cores."""


# The validation-tuned setting: best warm-user validation NDCG@10 of the grid in
# bench/results/sasrec_tune.json (`python -m bench.sasrec_tune`); test was never read.
TUNED = SASRecConfig(dropout=0.5)


def sasrec_variants() -> dict[str, SASRecConfig]:
    """The SASRec settings a report trains, by name (build with `SASRecScorer(config, name=)`).

    "sasrec": the paper-style window of 50 recent items; "sasrec-200": the same with the RLM's
    200 items, so neither model sees more history than the other; "sasrec-tuned": chosen on
    validation (see TUNED).
    """
    return {
        "sasrec": SASRecConfig(),
        "sasrec-200": SASRecConfig(max_len=200),
        "sasrec-tuned": TUNED,
    }


@contextmanager
def _torch_threads(n: int | None, device: torch.device) -> Iterator[None]:
    if n is None or device.type != "cpu" or n == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SASRecModel(nn.Module):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        c = config
        self.hidden = c.hidden
        self.item_emb = nn.Embedding(n_items + 1, c.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(c.max_len, c.hidden)
        self.emb_dropout = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=c.hidden,
            nhead=c.heads,
            dim_feedforward=c.hidden,  # the paper's point-wise FFN keeps the width
            dropout=c.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, c.blocks, norm=nn.LayerNorm(c.hidden), enable_nested_tensor=False
        )
        mask = torch.triu(torch.full((c.max_len, c.max_len), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)
        nn.init.normal_(self.item_emb.weight, std=c.hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    causal_mask: torch.Tensor  # a buffer, registered in __init__

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (item + 1, PAD on the right) -> hidden states [B, T, hidden]."""
        t = tokens.shape[1]
        positions = torch.arange(t, device=tokens.device)
        x = self.item_emb(tokens) * self.hidden**0.5 + self.pos_emb(positions)
        x = self.emb_dropout(x)
        return self.encoder(x, mask=self.causal_mask[:t, :t], is_causal=True)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """Scores over real items (padding row dropped)."""
        return states @ self.item_emb.weight[1:].T


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean of up to `window` values at each position (fewer at the start)."""
    if window < 1:
        raise ValueError("window must be >= 1")
    return [float(np.mean(values[max(0, i + 1 - window) : i + 1])) for i in range(len(values))]


def length_pooled_order(
    lengths: np.ndarray, batch_size: int, pool: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Batches of window indices: a random permutation cut into pools of `pool` batches, each
    pool sorted by length and cut into batches, then the batches shuffled. Every window is in
    exactly one batch; similar lengths share a batch, so little padding is computed."""
    order = torch.randperm(len(lengths), generator=generator)
    lengths_t = torch.as_tensor(lengths)
    batches = []
    step = batch_size * max(1, pool)
    for lo in range(0, len(order), step):
        chunk = order[lo : lo + step]
        if pool > 1:
            chunk = chunk[torch.argsort(lengths_t[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    if pool > 1:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return batches


def training_windows(
    sequences: list[list[int]], max_len: int, max_windows: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence, from its end backwards, into windows of max_len + 1 items.

    Consecutive windows share one item so every transition is trained on exactly once.
    Returns right-padded (inputs, targets) int64 arrays of shape [n_windows, max_len]:
    inputs hold item + 1 (PAD = 0), targets hold the next item or -100 (ignored).
    """
    inputs, targets = [], []
    for seq in sequences:
        end, taken = len(seq), 0
        while end >= 2 and (max_windows == 0 or taken < max_windows):
            window = seq[max(0, end - max_len - 1) : end]
            row_in = np.full(max_len, PAD, dtype=np.int64)
            row_tg = np.full(max_len, -100, dtype=np.int64)
            row_in[: len(window) - 1] = np.asarray(window[:-1]) + 1
            row_tg[: len(window) - 1] = window[1:]
            inputs.append(row_in)
            targets.append(row_tg)
            end, taken = end - max_len, taken + 1
    if not inputs:
        raise ValueError("no sequence has two or more items to train on")
    return np.stack(inputs), np.stack(targets)


class SASRecScorer:
    """Trains and serves SASRec; implements `ItemScorer`."""

    name = "sasrec"

    def __init__(
        self, config: SASRecConfig = SASRecConfig(), progress: bool = True, name: str = "sasrec"
    ) -> None:
        self.name = name  # reports tell variants apart by it (see `sasrec_variants`)
        self.config = config
        self.progress = progress
        self.device = torch.device(
            config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.model: SASRecModel | None = None
        self.n_items = 0
        self.history: list[dict[str, float]] = []  # one entry per validation evaluation
        self.best_epoch = 0
        self.train_seconds = 0.0

    def fit(
        self,
        sequences: list[list[int]],
        n_items: int,
        valid: tuple[list[list[int]], list[int]] | None = None,
    ) -> SASRecScorer:
        """Train on `sequences`; with `valid` = (histories, targets), keep the weights at the best
        smoothed validation NDCG@10 (see the module docstring)."""
        with _torch_threads(self.config.cpu_threads, self.device):
            return self._fit(sequences, n_items, valid)

    def _fit(
        self,
        sequences: list[list[int]],
        n_items: int,
        valid: tuple[list[list[int]], list[int]] | None,
    ) -> SASRecScorer:
        c = self.config
        start = time.perf_counter()
        torch.manual_seed(c.seed)
        generator = torch.Generator().manual_seed(c.seed)
        self.n_items = n_items
        self.model = model = SASRecModel(n_items, c).to(self.device)
        inputs_np, targets_np = training_windows(sequences, c.max_len, c.max_windows)
        if targets_np.max() >= n_items or inputs_np.min() < 0:
            raise ValueError(f"item indices must lie in [0, {n_items})")
        inputs = torch.from_numpy(inputs_np)
        targets = torch.from_numpy(targets_np)
        lengths = (inputs_np != PAD).sum(axis=1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        loss_fn = nn.CrossEntropyLoss(ignore_index=-100)

        best_score, best_state, stale = -1.0, None, 0
        raw: list[float] = []
        self.history, self.best_epoch = [], c.epochs
        bar = tqdm(range(1, c.epochs + 1), desc="SASRec", disable=not self.progress)
        for epoch in bar:
            model.train()
            total, steps = 0.0, 0
            for idx in length_pooled_order(lengths, c.batch_size, c.length_pool, generator):
                x, y = inputs[idx].to(self.device), targets[idx].to(self.device)
                # Only the used prefix: right padding makes trailing all-PAD columns droppable.
                t = int((x != PAD).sum(dim=1).max())
                states = model(x[:, :t])
                loss = loss_fn(model.logits(states).flatten(0, 1), y[:, :t].flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            postfix = {"loss": f"{total / steps:.3f}"}
            if valid is not None and (epoch % c.eval_every == 0 or epoch == c.epochs):
                raw.append(self.evaluate(*valid))
                score = moving_average(raw, c.smooth_window)[-1]
                self.history.append(
                    {"epoch": epoch, "loss": total / steps, "ndcg@10": raw[-1], "smoothed": score}
                )
                postfix["val_ndcg@10"] = f"{raw[-1]:.4f}"
                postfix["smoothed"] = f"{score:.4f}"
                if score > best_score:
                    best_score, stale, self.best_epoch = score, 0, epoch
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
            bar.set_postfix(postfix)
            if c.patience and stale >= c.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        self.train_seconds = time.perf_counter() - start
        return self

    def evaluate(self, histories: list[list[int]], targets: list[int]) -> float:
        """Mean NDCG@10 with each history's items excluded (as the evaluator does)."""
        ranks = target_ranks(self.score(histories), np.asarray(targets), exclude=histories)
        return float(ndcg(ranks, 10).mean())

    def score(self, histories: list[list[int]]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("SASRecScorer.fit must be called before score")
        with _torch_threads(self.config.cpu_threads, self.device):
            return self._score(histories)

    @torch.no_grad()
    def _score(self, histories: list[list[int]]) -> np.ndarray:
        assert self.model is not None
        c, model = self.config, self.model
        was_training = model.training
        model.eval()
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        for lo in range(0, len(histories), c.eval_batch_size):
            chunk = [h[-c.max_len :] for h in histories[lo : lo + c.eval_batch_size]]
            lengths = torch.tensor([len(h) for h in chunk])
            t = max(1, int(lengths.max()))
            tokens = torch.full((len(chunk), t), PAD, dtype=torch.long)
            for row, h in enumerate(chunk):
                tokens[row, : len(h)] = torch.as_tensor(h, dtype=torch.long) + 1
            states = model(tokens.to(self.device))
            # Empty histories read position 0, which then holds only PAD + position 0.
            last = (lengths - 1).clamp(min=0).to(self.device)
            final = states[torch.arange(len(chunk), device=self.device), last]
            out[lo : lo + len(chunk)] = model.logits(final).float().cpu().numpy()
        model.train(was_training)
        return out

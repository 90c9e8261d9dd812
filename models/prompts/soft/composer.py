"""The soft-prompt module: a pool of learnable components and a composer that turns a user's
interest embedding into attention weights over the pool, giving the user's prompt vectors; and
how those vectors enter the frozen RLM.

The k prompt vectors sit right before the history items, in the slots of the template's last k
words, and are *added* to those words' embeddings: the soft prompt is prompt tuning started from
the manual prompt (with a small pool it starts as the plain served prompt), so it can only move
from there where training says so. Vectors inserted as k extra positions instead (measured on
the shipped RLM, all users' validation NDCG@10) could not get back to the plain prompt: .1143
at best in 6 epochs against .1180, and a higher training loss than the plain prompt.

The interest embedding is what the RLM already knows of the user, so a new user needs no
training: the RLM's last hidden state of their plain served prompt (the sequential view) next
to the mean embedding of their recent items (the bag-of-items view).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from promptrec.models.prompts.rendering import UserPrompt, render_prompt
from promptrec.models.prompts.soft.config import SoftConfig
from promptrec.models.ranking import (
    add_slot_vectors,
    encode_token_lists,
    rows_per_call,
    target_ranks_and_logps,
)
from promptrec.models.rlm.model import RecLM
from promptrec.models.templates import TEMPLATES, PromptFields
from promptrec.models.text import item_token

WEIGHTS_FILE = "composer.safetensors"
META_FILE = "composer.json"


class SoftComposer(nn.Module):
    """interest [B, 2 d] -> composition logits [B, k, P] -> prompt vectors [B, k, d]."""

    def __init__(self, d_model: int, pool_size: int, n_vectors: int) -> None:
        super().__init__()
        self.d_model, self.pool_size, self.n_vectors = d_model, pool_size, n_vectors
        # near zero: the composed prompt starts as (almost) the plain prompt
        self.pool = nn.Parameter(torch.randn(pool_size, d_model) * 1e-3)
        self.keys = nn.Parameter(torch.randn(pool_size, d_model) * 0.02)
        self.norm = nn.LayerNorm(2 * d_model)
        self.query = nn.Linear(2 * d_model, n_vectors * d_model)

    def logits(self, interest: torch.Tensor) -> torch.Tensor:
        q = self.query(self.norm(interest)).view(-1, self.n_vectors, self.d_model)
        return q @ self.keys.T / math.sqrt(self.d_model)

    def compose(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1) @ self.pool

    def forward(self, interest: torch.Tensor) -> torch.Tensor:
        return self.compose(self.logits(interest))

    def save(self, directory: Path, fingerprint: str, config: SoftConfig, log: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            str(directory / WEIGHTS_FILE),
        )
        meta = {
            "d_model": self.d_model,
            "pool_size": self.pool_size,
            "n_vectors": self.n_vectors,
            "model_fingerprint": fingerprint,
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "training": log,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path, device: torch.device | None = None) -> tuple[SoftComposer, dict]:
        """(composer, its meta: fingerprint, config, training log)."""
        directory = Path(directory)
        if not (directory / META_FILE).is_file():
            raise FileNotFoundError(
                f"{directory} holds no soft-prompt composer ({META_FILE}); make one with "
                "`promptrec search --strategy soft`"
            )
        meta = json.loads((directory / META_FILE).read_text())
        composer = cls(meta["d_model"], meta["pool_size"], meta["n_vectors"])
        composer.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return composer.to(device or torch.device("cpu")).eval(), meta


def prompt_tokens(lm: RecLM, fields: PromptFields, template: str) -> list[str]:
    return render_prompt(TEMPLATES[template], fields, UserPrompt(), lm.max_history)


def check_template(template: str, n_vectors: int) -> None:
    """The soft slots must be template words in every prompt: the words after its last field."""
    words = TEMPLATES[template].text.split()[:-1]
    fixed = next((i for i, w in enumerate(reversed(words)) if w.startswith("{")), len(words))
    if n_vectors > fixed:
        raise ValueError(
            f"template {template!r} ends with {fixed} fixed words before its history; "
            f"{n_vectors} soft vectors need as many"
        )


@dataclass(frozen=True)
class Encoded:
    """Right-padded `<s> prompt` rows, and where each row's history items begin: the soft
    slots are the k positions right before it (the template's last k words)."""

    ids: torch.Tensor
    mask: torch.Tensor
    history_at: torch.Tensor  # [B]


def encode_fields(lm: RecLM, fields: Sequence[PromptFields], template: str) -> Encoded:
    tokens = [prompt_tokens(lm, f, template) for f in fields]
    ids, mask = encode_token_lists(lm, tokens)
    shown = [
        min(len(f.history), lm.max_history, len(t)) for f, t in zip(fields, tokens, strict=True)
    ]
    at = [1 + len(t) - s for t, s in zip(tokens, shown, strict=True)]
    return Encoded(ids, mask, torch.tensor(at, device=ids.device))


def splice(
    lm: RecLM, encoded: Encoded, vectors: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input embeddings, attention mask) of the rows with each row's vectors [B, k, d] added
    to the embeddings of its k soft slots; with None (or zero vectors), the plain prompt's."""
    embeds = lm.model.get_input_embeddings()(encoded.ids)
    if vectors is None:
        return embeds, encoded.mask
    return add_slot_vectors(embeds, encoded.history_at, vectors), encoded.mask


def soft_item_logits(
    lm: RecLM,
    fields: Sequence[PromptFields],
    vectors: torch.Tensor | None,
    template: str,
) -> torch.Tensor:
    """Next-item logits [B, n_items] of the prompts with these vectors (None: plain prompts).
    Differentiable in `vectors`; the caller picks grad or inference mode."""
    embeds, mask = splice(lm, encode_fields(lm, fields, template), vectors)
    hidden = lm.model.last_hidden(inputs_embeds=embeds, attention_mask=mask)
    return lm.model.item_logits(hidden, lm.item_token_ids().to(hidden.device))


def teacher_forced_ce(
    lm: RecLM,
    prompts: Sequence[PromptFields],
    items: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    vectors: torch.Tensor,
    template: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy of every target, its row): row r is `prompts[r]` with its vectors and
    `items[r]` after its history, one pass; its last len(targets[r]) positions predict
    `targets[r]` (the first from the prompt's own history, the others from the items)."""
    fields = [
        PromptFields([*p.history, *i], p.profile, p.taste)
        for p, i in zip(prompts, items, strict=True)
    ]
    embeds, mask = splice(lm, encode_fields(lm, fields, template), vectors)
    hidden = lm.model(inputs_embeds=embeds, attention_mask=mask)
    ends = (mask.sum(1) - 1).tolist()  # each row's last position
    rows: list[int] = []
    cols: list[int] = []
    for r, t in enumerate(targets):
        rows += [r] * len(t)
        cols += range(ends[r] - len(t) + 1, ends[r] + 1)
    at = hidden[torch.tensor(rows), torch.tensor(cols)]
    logits = lm.model.item_logits(at, lm.item_token_ids().to(at.device)).float()
    flat = torch.tensor([x for t in targets for x in t], device=logits.device)
    ce = nn.functional.cross_entropy(logits, flat, reduction="none")
    return ce, torch.tensor(rows, device=ce.device)


@torch.no_grad()
def mean_target_logp(
    lm: RecLM,
    fields: Sequence[PromptFields],
    targets: Sequence[int],
    owner: Sequence[int],
    vectors: torch.Tensor,
    template: str,
) -> np.ndarray:
    """[owners] each owner's mean log-probability of their rows' targets, every row's prompt
    with its owner's vectors [owners, k, d] (`rows_per_call` rows per forward pass)."""
    logps = []
    step = rows_per_call(lm.device)
    for lo in range(0, len(fields), step):
        rows = list(owner[lo : lo + step])
        logits = soft_item_logits(lm, fields[lo : lo + step], vectors[rows], template).float()
        at = torch.tensor(targets[lo : lo + step], device=logits.device)
        logps.append(target_ranks_and_logps(logits, at)[1])
    n = len(vectors)
    total = np.zeros(n)
    np.add.at(total, list(owner), np.concatenate(logps) if logps else [])
    return total / np.maximum(np.bincount(list(owner), minlength=n), 1)


@torch.no_grad()
def interest(
    lm: RecLM, fields: Sequence[PromptFields], config: SoftConfig, rows_per_call: int = 64
) -> torch.Tensor:
    """[B, 2 d]: each user's last hidden state under the plain served prompt, and the mean
    input embedding of their `interest_items` most recent items (zeros for no history)."""
    table = lm.model.get_input_embeddings()
    out = []
    for lo in range(0, len(fields), rows_per_call):
        chunk = fields[lo : lo + rows_per_call]
        encoded = encode_fields(lm, chunk, config.template)
        hidden = lm.model.last_hidden(input_ids=encoded.ids, attention_mask=encoded.mask)
        recent = [[item_token(i) for i in f.history[-config.interest_items :]] for f in chunk]
        item_ids, item_mask = encode_token_lists(lm, recent)
        item_mask[:, 0] = 0  # <s>
        m = item_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (table(item_ids) * m).sum(1) / m.sum(1).clamp(min=1)
        out.append(torch.cat([hidden, mean], dim=1))
    if not out:
        return torch.zeros(0, 2 * lm.model.config.n_embd, device=lm.device)
    return torch.cat(out)


@torch.no_grad()
def served_vectors(
    lm: RecLM,
    composer: SoftComposer,
    config: SoftConfig,
    fields: Sequence[PromptFields],
    stored: Sequence[np.ndarray | None],
) -> torch.Tensor:
    """[B, k, d]: each row's stored vectors, else the composition from its fields (one interest
    pass, for those rows only)."""
    out = torch.zeros(len(fields), config.n_vectors, lm.model.config.n_embd, device=lm.device)
    need = [i for i, v in enumerate(stored) if v is None]
    for i, v in enumerate(stored):
        if v is not None:
            out[i] = torch.from_numpy(np.asarray(v)).to(out.device)
    if need:
        out[need] = composer(interest(lm, [fields[i] for i in need], config)).to(out.dtype)
    return out

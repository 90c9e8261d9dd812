"""The recommendation LM: a decoder-only GPT-2 built from a preset, its tokenizer, and the
item-token mapping (CLLM4Rec-style: one token per item, an item head over the item tokens)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import AutoTokenizer, GPT2Config, GPT2Model, PreTrainedTokenizerBase
from transformers.models.gpt2.modeling_gpt2 import GPT2Block, GPT2PreTrainedModel
from transformers.utils import logging as hf_logging

from promptrec.models.malloc_settings import retain_freed_memory
from promptrec.models.rlm.config import PRESETS, Preset
from promptrec.models.text import ITEM_TOKEN_PREFIX

# The library's per-shard progress bars say nothing useful for a model of a few MB.
hf_logging.disable_progress_bar()

META_FILE = "promptrec.json"


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RecGPT(GPT2PreTrainedModel):
    """GPT-2 whose item tokens are also its output classes: item scores at a position are that
    position's hidden state dotted with the (tied) item-token embeddings, plus an item bias
    (popularity, which a dot product alone learns slowly)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.item_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        if not isinstance(value, nn.Embedding):
            raise TypeError(f"input embeddings must be an nn.Embedding, not {type(value).__name__}")
        self.transformer.wte = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [batch, length, d_model] of right-padded prompts."""
        return self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
        ).last_hidden_state

    def last_hidden(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden state [batch, d_model] at each right-padded prompt's last position:
        the same as `forward` there (a test pins it), for less work. Ranking needs only that
        position, and in the last block nothing else depends on the other positions' queries
        and feed-forward, so the last block computes them for the one position alone (about a
        third of a two-block model's work)."""
        gpt = self.transformer
        x = gpt.wte(input_ids) if inputs_embeds is None else inputs_embeds
        batch, length, width = x.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=x.device)
        x = gpt.drop(x + gpt.wpe(torch.arange(length, device=x.device)))
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        visible = causal[None, None] & attention_mask.bool()[:, None, None, :]  # [B, 1, L, L]
        last = attention_mask.sum(dim=1) - 1
        heads = self.config.n_head
        blocks = cast("Sequence[GPT2Block]", gpt.h)  # a ModuleList holds plain Modules
        for i, block in enumerate(blocks):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(width, dim=2)
            mask = visible
            if i == len(blocks) - 1:
                q = q.gather(1, last.view(-1, 1, 1).expand(-1, 1, width))
                x = x.gather(1, last.view(-1, 1, 1).expand(-1, 1, width))
                mask = visible.gather(2, last.view(-1, 1, 1, 1).expand(-1, 1, 1, length))
            q, k, v = (t.unflatten(2, (heads, -1)).transpose(1, 2) for t in (q, k, v))
            attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.attn.c_proj(attended.transpose(1, 2).flatten(2))
            x = x + block.mlp(block.ln_2(x))
        return gpt.ln_f(x[:, 0])

    def item_logits(self, hidden: torch.Tensor, item_token_ids: torch.Tensor) -> torch.Tensor:
        """[..., d_model] hidden states -> [..., n_items] logits over the item tokens."""
        weight = self.transformer.wte.weight.index_select(0, item_token_ids)
        return hidden @ weight.T + self.item_bias.index_select(0, item_token_ids)


def build_gpt(preset: Preset, vocab_size: int, pad_id: int, bos_id: int) -> RecGPT:
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=preset.positions,
        n_embd=preset.d_model,
        n_layer=preset.num_layers,
        n_head=preset.num_heads,
        n_inner=preset.d_ff,
        resid_pdrop=preset.dropout,
        embd_pdrop=preset.dropout,
        # Dropout on [batch, heads, length, length] weights took a quarter of a CPU step.
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["RecGPT"]
    return RecGPT(config)


@dataclass
class RecLM:
    """A decoder-only model whose vocabulary has one token per item, plus what serving needs."""

    model: RecGPT
    tokenizer: PreTrainedTokenizerBase
    item_ids: list[str]  # external id of item index k (token item_k)
    max_history: int
    meta: dict
    _item_token_ids: torch.Tensor = field(init=False, repr=False)
    vocab: dict[str, int] = field(init=False, repr=False)
    """token -> id, read once: the tokenizer rebuilds this dict on every get_vocab() call."""
    _scorer: tuple[tuple[int, torch.device], Any] | None = field(
        default=None, init=False, repr=False
    )
    """((model id, device), the inference scorer `models.ranking.item_scorer` built for them)"""
    _slot_scorer: tuple[tuple[int, torch.device], Any] | None = field(
        default=None, init=False, repr=False
    )
    """The same for `models.ranking.slot_scorer` (prompts with soft vectors in their slots)."""

    def __post_init__(self) -> None:
        retain_freed_memory()  # once per process: every model call reuses freed pages
        self.vocab = vocab = self.tokenizer.get_vocab()
        ids = [vocab[f"{ITEM_TOKEN_PREFIX}{k}"] for k in range(len(self.item_ids))]
        self._item_token_ids = torch.tensor(ids, dtype=torch.long)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_positions(self) -> int:
        return int(self.model.config.n_positions)

    def item_token_ids(self) -> torch.Tensor:
        """Vocabulary id of item index k at position k."""
        return self._item_token_ids

    def fingerprint(self) -> str:
        """Identifies the weights a prompt set was searched on."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {**self.meta, "item_ids": self.item_ids, "max_history": self.max_history}
        (directory / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> RecLM:
        """Load with the library's own calls; any local checkpoint of `RecGPT` whose vocabulary
        has item_0..item_{n-1} tokens works (without promptrec.json, ids are the indices)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            # Never fall through to a hub lookup: models are local directories here.
            raise FileNotFoundError(
                f"{directory} is not a model directory (no config.json); train one with "
                "`promptrec train` or point --model at a local Hugging Face checkpoint"
            )
        config = json.loads((directory / "config.json").read_text())
        if config.get("model_type") != "gpt2":
            raise ValueError(
                f"{directory} holds a {config.get('model_type')!r} model; PromptRec serves its "
                "decoder-only RLM (model_type gpt2): retrain with `promptrec train`"
            )
        tokenizer = AutoTokenizer.from_pretrained(directory)
        # typeshed's functools.wraps result has no __get__, so mypy takes the wrapped `to` for
        # an unbound function whose first argument is the model.
        model = RecGPT.from_pretrained(directory).to(pick_device(device)).eval()  # type: ignore[arg-type]
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        item_ids = meta.pop("item_ids", None)
        if item_ids is None:
            vocab = tokenizer.get_vocab()
            n = sum(1 for t in vocab if t.startswith(ITEM_TOKEN_PREFIX) and t[5:].isdigit())
            item_ids = [str(k) for k in range(n)]
        if not item_ids:
            raise ValueError(f"{directory}: the tokenizer has no item_<k> tokens to rank")
        max_history = int(meta.pop("max_history", 50))
        return cls(model, tokenizer, item_ids, max_history, meta)


def preset_dict(name: str) -> dict:
    return {"preset": name, **asdict(PRESETS[name])}

"""The recommendation LM: a T5 built from a preset, its tokenizer, and the item-token mapping."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.activations import ACT2FN, NewGELUActivation
from transformers.utils import logging as hf_logging

from models.allocator import retain_freed_memory
from models.text import ITEM_TOKEN_PREFIX

# The library's per-shard progress bars say nothing useful for a model of a few MB.
hf_logging.disable_progress_bar()

META_FILE = "promptrec.json"


@dataclass(frozen=True)
class Preset:
    d_model: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    max_history: int  # history items shown in a prompt (the most recent ones)
    dropout: float = 0.1


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        d_model=64, d_ff=128, num_layers=2, num_decoder_layers=1, num_heads=2, max_history=10
    ),
    "small": Preset(
        d_model=128, d_ff=384, num_layers=3, num_decoder_layers=1, num_heads=4, max_history=16
    ),
    "base": Preset(
        d_model=384, d_ff=1024, num_layers=6, num_decoder_layers=2, num_heads=6, max_history=30
    ),
}


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_t5(preset: Preset, vocab_size: int) -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=preset.d_model,
        d_kv=preset.d_model // preset.num_heads,
        d_ff=preset.d_ff,
        num_layers=preset.num_layers,
        num_decoder_layers=preset.num_decoder_layers,
        num_heads=preset.num_heads,
        dropout_rate=preset.dropout,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        # The tanh GELU of T5 v1.1 ("gated-gelu" means gelu_new), computed by torch's fused kernel.
        feed_forward_proj="gated-gelu_pytorch_tanh",
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5ForConditionalGeneration(config)


def use_fused_gelu(model: torch.nn.Module) -> None:
    """`gelu_new` (checkpoints saved before, stock T5 v1.1) is the tanh GELU written as five
    tensor ops; torch's fused kernel computes the same function to float rounding, several times
    faster on CPU, and ranking time is mostly the feed-forward layers. Weights are untouched, so
    the fingerprint (and the prompt sets searched on it) stays."""
    fused = ACT2FN["gelu_pytorch_tanh"]
    for module in model.modules():
        if isinstance(getattr(module, "act", None), NewGELUActivation):
            module.act = fused


@dataclass
class RecLM:
    """A seq2seq model whose vocabulary has one token per item, plus what serving needs."""

    model: torch.nn.Module
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
        """Load with the library's own calls; any local HF seq2seq checkpoint whose vocabulary
        has item_0..item_{n-1} tokens works (without promptrec.json, ids are the indices)."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            # Never fall through to a hub lookup: models are local directories here.
            raise FileNotFoundError(
                f"{directory} is not a model directory (no config.json); train one with "
                "`promptrec train` or point --model at a local Hugging Face checkpoint"
            )
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForSeq2SeqLM.from_pretrained(directory).to(pick_device(device)).eval()
        use_fused_gelu(model)
        meta_path = directory / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        item_ids = meta.pop("item_ids", None)
        if item_ids is None:
            vocab = tokenizer.get_vocab()
            n = sum(1 for t in vocab if t.startswith(ITEM_TOKEN_PREFIX) and t[5:].isdigit())
            item_ids = [str(k) for k in range(n)]
        if not item_ids:
            raise ValueError(f"{directory}: the tokenizer has no item_<k> tokens to rank")
        max_history = int(meta.pop("max_history", 20))
        return cls(model, tokenizer, item_ids, max_history, meta)


def preset_dict(name: str) -> dict:
    return {"preset": name, **asdict(PRESETS[name])}

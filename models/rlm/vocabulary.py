"""A word-level tokenizer in which every item is one token, built with `tokenizers`."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from promptrec.models.templates import CONTENT_TEMPLATE, TEMPLATES
from promptrec.models.text import TOKEN_PATTERN, item_token, words

PAD, BOS, UNK = "<pad>", "<s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, UNK]
FIELD_WORDS = ["profile", "taste", "genres", ":", ",", ".", "?"]


def build_tokenizer(n_items: int, extra_words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Vocabulary: special tokens, then items item_0..item_{n-1}, then every word seen."""
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *(item_token(i) for i in range(n_items))]:
        vocab[token] = len(vocab)
    template_words = [w for t in TEMPLATES.values() for w in words(_strip_fields(t.text))]
    for token in sorted(
        {*template_words, *words(_strip_fields(CONTENT_TEMPLATE)), *FIELD_WORDS, *extra_words}
    ):
        if token not in vocab:
            vocab[token] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(TOKEN_PATTERN), "isolated")]
    )
    # Every encoded prompt starts with <s>: the first real token has a position to attend to.
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=BOS, unk_token=UNK
    )


def _strip_fields(text: str) -> str:
    return " ".join(p for p in text.split() if not p.startswith("{"))

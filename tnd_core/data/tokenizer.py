"""Word-level tokenizer of the baby language, as a `PreTrainedTokenizerFast`.

One id per word form and punctuation mark, plus <pad>, <s> (bos), </s> (eos) and <unk>; pad is not
eos, so masks built from pad ids never hide a real end of sentence. Encoding adds <s> in front and
nothing at the end, so a prompt can be continued; training text appends </s> itself.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tnd_core.data.language import vocabulary

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]


def build_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (default: the whole baby-language vocabulary)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + (words or vocabulary()))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {EOS} $B", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(path: str | Path, words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the tokenizer and write it with `save_pretrained`; returns it."""
    tokenizer = build_tokenizer(words)
    tokenizer.save_pretrained(str(path))
    return tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved tokenizer through the ordinary `AutoTokenizer.from_pretrained` path."""
    return AutoTokenizer.from_pretrained(str(path))

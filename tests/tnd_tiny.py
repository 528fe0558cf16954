"""Tiny models for the engine's tests: a word-level tokenizer and 2-layer GPT-2s built from configs.

Nothing is downloaded; models are made in memory (or saved to a tmp folder and loaded back).
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<unk>"]


def make_tokenizer(n_words: int = 24) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over w0 .. w{n-1}; pad id 0, eos id 1."""
    vocab = {w: i for i, w in enumerate(SPECIALS + [f"w{i}" for i in range(n_words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def make_lm(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, n_embd: int = 32, initializer_range: float = 0.02
) -> GPT2LMHeadModel:
    """2-layer GPT-2 over the tokenizer's vocabulary, no dropout."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=n_embd,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=initializer_range,
    )
    return GPT2LMHeadModel(config)


def make_classifier(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return GPT2ForSequenceClassification(config)


class TargetWordReward:
    """Rule-based reward: occurrences of `word` in the text, per generated token (prompts never contain it)."""

    def __init__(self, word: str, max_new_tokens: int):
        self.word = word
        self.max_new_tokens = max_new_tokens

    def score_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([t.split().count(self.word) / self.max_new_tokens for t in texts])


class ConstantReward:
    """Scores every text the same: 'reward off'."""

    def score_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.zeros(len(texts))


def prompts(n: int = 32, seed: int = 0, words: int = 10, length: int = 3) -> list[str]:
    """Short prompts over w0 .. w{words-1}."""
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(0, words, (length,), generator=g)) for _ in range(n)]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run several times faster on one thread when the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

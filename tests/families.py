"""Look-alikes of the model families users bring, built locally: tokenizers trained with the `tokenizers`
library on the baby language, tiny random-init models from configs, both saved with `save_pretrained` so
that they load through the same `from_pretrained` path as a hub id.

Causal LMs (students and teachers): GPT-2 (byte-level BPE, no pad token), Llama with tied embeddings and a
GPT-2-style tokenizer (as SmolLM2), Qwen2 (pad = EOS, no BOS), GPT-NeoX (as Pythia, its own pad token),
OPT (GPT-2 tokenizer that prepends BOS = EOS = '</s>'). Reward models: BERT and DistilBERT (WordPiece),
RoBERTa (byte-level BPE), and decoder sequence classifiers (Qwen2, Llama) whose config has no pad id.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer

from tnd_core.data.language import generate_corpus

WIDTH, HEADS, POSITIONS = 32, 2, 128
BPE_SPECIALS = ["<|endoftext|>", "<|padding|>", "<s>", "</s>", "<pad>", "<unk>", "<mask>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(n: int = 1500, seed: int = 4) -> list[str]:
    """Sentences of the baby language the tokenizers are trained on."""
    return generate_corpus(n, seed=seed)


@functools.lru_cache(maxsize=None)
def bpe_vocab(vocab_size: int = 400, seed: int = 4) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE (vocab, merges) trained on the corpus; a different size gives another vocabulary."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(seed=seed), vocab_size=vocab_size, special_tokens=BPE_SPECIALS, show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    return dict(model["vocab"]), [tuple(m) for m in model["merges"]]


@functools.lru_cache(maxsize=None)
def wordpiece_vocab(vocab_size: int = 300) -> dict[str, int]:
    """A WordPiece vocabulary (BERT's specials first) trained on the corpus."""
    wordpiece = BertWordPieceTokenizer()
    wordpiece.train_from_iterator(corpus(), vocab_size=vocab_size, show_progress=False)
    return wordpiece.get_vocab()


def make_tokenizer(kind: str, vocab_size: int = 400) -> Any:
    """The tokenizer class each family ships, over a locally trained vocabulary."""
    from transformers import (
        BertTokenizer,
        DistilBertTokenizer,
        GPT2Tokenizer,
        GPTNeoXTokenizer,
        Qwen2Tokenizer,
        RobertaTokenizer,
    )

    if kind in ("bert", "distilbert"):
        return (BertTokenizer if kind == "bert" else DistilBertTokenizer)(vocab=dict(wordpiece_vocab()))
    vocab, merges = bpe_vocab(vocab_size)
    vocab, merges = dict(vocab), list(merges)  # tokenizers may change what they are given; the cache's stays
    if kind in ("gpt2", "llama"):  # SmolLM2 ships a GPT2Tokenizer: no pad token, BOS = EOS
        return GPT2Tokenizer(vocab=vocab, merges=merges)
    if kind == "opt":  # OPT: GPT-2's tokenizer with '</s>' as BOS and EOS, prepended to every text
        return GPT2Tokenizer(
            vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>",
            add_bos_token=True,
        )  # fmt: skip
    if kind == "qwen2":
        return Qwen2Tokenizer(vocab=vocab, merges=merges)
    if kind == "neox":
        return GPTNeoXTokenizer(vocab=vocab, merges=merges)
    if kind == "roberta":
        return RobertaTokenizer(vocab=vocab, merges=merges)
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def _ids(tok: Any) -> dict[str, Any]:
    return {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


def causal_lm(family: str, tok: Any, layers: int = 1, initializer_range: float = 0.02) -> torch.nn.Module:
    """A tiny random-init causal LM of `family` over `tok`'s vocabulary."""
    import transformers as tf

    ids, init = _ids(tok), {"initializer_range": initializer_range}
    if family == "gpt2":
        config = tf.GPT2Config(n_positions=POSITIONS, n_embd=WIDTH, n_layer=layers, n_head=HEADS, **ids, **init)
        return tf.GPT2LMHeadModel(config)
    decoder = {
        "hidden_size": WIDTH,
        "intermediate_size": 2 * WIDTH,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "max_position_embeddings": POSITIONS,
    }
    tied = {"num_key_value_heads": 1, "tie_word_embeddings": True}  # as SmolLM2 and Qwen2.5-0.5B
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**tied, **decoder, **ids, **init))
    if family == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**tied, **decoder, **ids, **init))
    if family == "neox":
        config = tf.GPTNeoXConfig(rotary_pct=0.25, pad_token_id=tok.pad_token_id, **decoder, **ids, **init)
        return tf.GPTNeoXForCausalLM(config)
    if family == "opt":
        config = tf.OPTConfig(
            hidden_size=WIDTH, ffn_dim=2 * WIDTH, num_hidden_layers=layers, num_attention_heads=HEADS,
            max_position_embeddings=POSITIONS, word_embed_proj_dim=WIDTH, pad_token_id=tok.pad_token_id,
            dropout=0.0, attention_dropout=0.0, **ids, init_std=initializer_range,
        )  # fmt: skip
        return tf.OPTForCausalLM(config)
    raise ValueError(f"unknown causal LM family {family!r}")


def sequence_classifier(family: str, tok: Any, num_labels: int = 1, **extra: Any) -> torch.nn.Module:
    """A tiny random-init sequence classifier of `family` (one output unless told)."""
    import transformers as tf

    head = {"num_labels": num_labels, **extra}
    encoder = {
        "vocab_size": len(tok),
        "hidden_size": WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "intermediate_size": 2 * WIDTH,
        "max_position_embeddings": POSITIONS + 2,
    }
    if family == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(pad_token_id=tok.pad_token_id, **encoder, **head))
    if family == "distilbert":
        config = tf.DistilBertConfig(
            vocab_size=len(tok), dim=WIDTH, n_layers=1, n_heads=HEADS, hidden_dim=2 * WIDTH,
            max_position_embeddings=POSITIONS, pad_token_id=tok.pad_token_id, **head,
        )  # fmt: skip
        return tf.DistilBertForSequenceClassification(config)
    if family == "roberta":
        ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        return tf.RobertaForSequenceClassification(tf.RobertaConfig(type_vocab_size=1, **encoder, **ids, **head))
    decoder = {
        "vocab_size": len(tok),
        "hidden_size": WIDTH,
        "intermediate_size": 2 * WIDTH,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 1,
        "max_position_embeddings": POSITIONS,
        "eos_token_id": tok.eos_token_id,
    }
    head.setdefault("pad_token_id", None)  # as most decoder checkpoints: the loader must supply it
    if family == "qwen2":
        return tf.Qwen2ForSequenceClassification(tf.Qwen2Config(**decoder, **head))
    if family == "llama":
        return tf.LlamaForSequenceClassification(tf.LlamaConfig(**decoder, **head))
    raise ValueError(f"unknown sequence classifier family {family!r}")


@dataclass
class Saved:
    """Where a built family lives: teacher and student folders share the family's tokenizer."""

    teacher: Path
    student: Path


def save_model(folder: Path, model: torch.nn.Module, tok: Any) -> Path:
    """`save_pretrained` of the model and its tokenizer into `folder`."""
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_pair(root: Path, family: str, vocab_size: int = 400, name: str | None = None, **tokenizer: Any) -> Saved:
    """A 2-layer teacher and a 1-layer student of `family` with one tokenizer, saved under root/name (default:
    the family); another `vocab_size` gives the pair another vocabulary. `tokenizer` sets its attributes
    (e.g. chat_template)."""
    tok = make_tokenizer(family, vocab_size)
    for key, value in tokenizer.items():
        setattr(tok, key, value)
    folder = root / (name or family)
    torch.manual_seed(1)
    teacher = save_model(folder / "teacher", causal_lm(family, tok, layers=2), tok)
    torch.manual_seed(2)
    student = save_model(folder / "student", causal_lm(family, tok, layers=1), tok)
    return Saved(teacher, student)


def save_reward(root: Path, family: str, name: str | None = None, **extra: Any) -> Path:
    """A reward model of `family` (one output unless `extra` says otherwise) with its own tokenizer, saved under
    root/name (default: reward-family)."""
    tok = make_tokenizer(family)
    torch.manual_seed(3)
    return save_model(root / (name or f"reward-{family}"), sequence_classifier(family, tok, **extra), tok)


def write_prompts(path: Path, n: int = 8, chat: bool = False) -> Path:
    """A JSONL file of short prompts (first words of corpus sentences); chat rows hold one user message."""
    rows = [" ".join(s.split()[:2]) for s in corpus(n, seed=9)]
    lines = [{"prompt": [{"role": "user", "content": r}] if chat else r} for r in rows]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    return path


CAUSAL_FAMILIES = ("gpt2", "llama", "qwen2", "neox", "opt")
REWARD_FAMILIES = ("bert", "distilbert", "roberta", "qwen2")

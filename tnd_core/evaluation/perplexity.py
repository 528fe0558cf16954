"""Held-out perplexity: exp of the mean next-token negative log-likelihood over every predicted token."""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F

from tnd_core.evaluation.common import as_language_model, batches, encode_sentences, evaluation_mode


def token_nll(model: Any, sentences: list[str], tokenizer: Any = None, batch_size: int = 64) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of every token after the first, EOS included, and the token count."""
    lm = as_language_model(model, tokenizer)
    total, count = 0.0, 0
    with evaluation_mode(lm):
        for chunk in batches(sentences, batch_size):
            input_ids, mask = encode_sentences(lm.tokenizer, chunk, lm.device)
            logits = lm.logits(input_ids, mask)[:, :-1].float()
            targets = input_ids[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
            predicted = mask[:, 1:].reshape(-1).bool()
            total += float(nll[predicted].sum())
            count += int(predicted.sum())
    return total, count


def perplexity(model: Any, sentences: list[str], tokenizer: Any = None, batch_size: int = 64) -> float:
    """Per-token perplexity of `sentences` (held out from training) under `model`."""
    total, count = token_nll(model, sentences, tokenizer, batch_size)
    return math.exp(total / count) if count else float("nan")


__all__ = ["perplexity", "token_nll"]

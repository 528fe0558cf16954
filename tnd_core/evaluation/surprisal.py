"""Word surprisal and word acquisition (the paper's measure of what the student has learnt).

The surprisal of a word occurrence is -log2 p(word | left context), summed over its tokens when a
tokenizer splits words; a word's surprisal is its mean over the held-out occurrences. A word counts
as acquired when its surprisal is below a threshold (bits).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch.nn.functional as F

from tnd_core.errors import ConfigError
from tnd_core.evaluation.common import as_language_model, batches, evaluation_mode

DEFAULT_THRESHOLD_BITS = 7.0


def _word_spans(sentence: str) -> list[tuple[int, int, str]]:
    spans, start = [], None
    for i, ch in enumerate(sentence + " "):
        if ch.isspace():
            if start is not None:
                spans.append((start, i, sentence[start:i]))
                start = None
        elif start is None:
            start = i
    return spans


def word_surprisals(model: Any, sentences: list[str], tokenizer: Any = None, batch_size: int = 64) -> dict[str, float]:
    """Mean surprisal (bits) of each whitespace-separated word with a letter in it, over `sentences`."""
    lm = as_language_model(model, tokenizer)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    with evaluation_mode(lm):
        for chunk in batches(sentences, batch_size):
            enc = lm.tokenizer(
                list(chunk), return_offsets_mapping=True, padding=True, padding_side="right", return_tensors="pt"
            )
            input_ids, mask = enc["input_ids"].to(lm.device), enc["attention_mask"].to(lm.device)
            logp = F.log_softmax(lm.logits(input_ids, mask).float(), -1)
            # surprisal of token t comes from the prediction at t-1; the first token is never predicted
            token_bits = -logp[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1) / math.log(2)
            for row, sentence in enumerate(chunk):
                word_bits = [0.0] * len(spans := _word_spans(sentence))
                seen = [False] * len(spans)
                for t, (start, end) in enumerate(enc["offset_mapping"][row].tolist()):
                    if t == 0 or end <= start or not mask[row, t]:
                        continue
                    for w, (w_start, w_end, _) in enumerate(spans):
                        if start < w_end and end > w_start:
                            word_bits[w] += float(token_bits[row, t - 1])
                            seen[w] = True
                            break
                for (_, _, word), bits, ok in zip(spans, word_bits, seen):
                    if ok and any(ch.isalpha() for ch in word):
                        sums[word.lower()] += bits
                        counts[word.lower()] += 1
    return {word: sums[word] / counts[word] for word in sorted(sums)}


def words_acquired(surprisals: dict[str, float], threshold: float = DEFAULT_THRESHOLD_BITS) -> int:
    """How many words have a mean surprisal below `threshold` bits."""
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ConfigError("acquisition_threshold", threshold, "must be a number of bits > 0")
    return sum(1 for bits in surprisals.values() if bits < threshold)

"""Sampling continuations and the grammaticality rate of what a model writes."""

from __future__ import annotations

from typing import Any, Callable

import torch

from tnd_core.data.recognizer import is_grammatical
from tnd_core.errors import TndError
from tnd_core.evaluation.common import as_language_model, batches, evaluation_mode


def sample_texts(
    model: Any,
    prompts: list[str] | None = None,
    tokenizer: Any = None,
    n: int = 64,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int | None = 0,
) -> list[str]:
    """Prompt + sampled continuation (cut at the first EOS) for each prompt, or `n` texts from BOS alone.

    With `seed`, sampling uses a private RNG: the same texts for the same weights, and a training
    run that evaluates stays reproducible.
    """
    lm = as_language_model(model, tokenizer)
    if lm.generate is None:
        raise TndError(f"evaluation: {type(model).__name__} cannot generate text (it has no generate method)")
    tok = lm.tokenizer
    prompts = list(prompts) if prompts is not None else [""] * n
    start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    texts: list[str] = []
    with evaluation_mode(lm, seed):
        for chunk in batches(prompts, batch_size):
            encoded = [ids or [start_id] for ids in tok(list(chunk))["input_ids"]]
            width = max(map(len, encoded))
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                mask[row, width - len(ids) :] = 1
            output = lm.generate(
                input_ids=input_ids.to(lm.device),
                attention_mask=mask.to(lm.device),
                do_sample=True,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                pad_token_id=pad_id,
                eos_token_id=tok.eos_token_id,
            )
            for ids, row in zip(encoded, output[:, width:].tolist()):
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id)]
                texts.append(tok.decode(ids + row, skip_special_tokens=True).strip())
    return texts


def grammaticality_rate(texts: list[str], recognizer: Callable[[str], bool] = is_grammatical) -> float:
    """Share of `texts` the recognizer accepts (0 for no texts)."""
    return sum(1 for t in texts if recognizer(t)) / len(texts) if texts else 0.0

"""Adapters so every metric accepts a TeacherModel / StudentModel wrapper or a plain causal LM + tokenizer."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from tnd_core.errors import TndError


@dataclass
class LanguageModel:
    """What the metrics need: next-token logits, sampling, the tokenizer and the device."""

    logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generate: Callable[..., torch.Tensor] | None
    tokenizer: Any
    device: torch.device
    module: Any


def as_language_model(model: Any, tokenizer: Any = None) -> LanguageModel:
    """Adapt a wrapper (`get_student_logits` / `get_teacher_logits`) or a causal LM to `LanguageModel`."""
    if isinstance(model, LanguageModel):
        return model
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise TndError(f"evaluation: {type(model).__name__} has no tokenizer; pass tokenizer=...")
    if hasattr(model, "get_student_logits"):
        logits = model.get_student_logits
    elif hasattr(model, "get_teacher_logits"):
        logits = model.get_teacher_logits
    elif callable(model):

        def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits
    else:
        raise TndError(f"evaluation: {type(model).__name__} is not a language model")
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []
    device = parameters[0].device if parameters else torch.device("cpu")
    return LanguageModel(logits, getattr(model, "generate", None), tokenizer, device, model)


@contextlib.contextmanager
def evaluation_mode(lm: LanguageModel, seed: int | None = None) -> Iterator[None]:
    """No gradients, eval mode (restored afterwards) and, with `seed`, a private RNG.

    The private RNG leaves training randomness untouched.
    """
    module = lm.module
    was_training = bool(getattr(module, "training", False))
    if hasattr(module, "eval"):
        module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[lm.device] if lm.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        if was_training and hasattr(module, "train"):
            module.train(True)


def encode_sentences(
    tokenizer: Any, sentences: list[str], device: torch.device, add_eos: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask; EOS appended so the end of the sentence is predicted too."""
    ids = tokenizer(list(sentences), add_special_tokens=True)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        ids = [seq + [tokenizer.eos_token_id] for seq in ids]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids.to(device), mask.to(device)


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

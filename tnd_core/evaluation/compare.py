"""Teacher and student side by side on one prompt: what Compare in the app shows.

Both models continue the prompt with the trainer's own generation settings and the same seed, so
the student's text is what one of its trials would look like. Each continuation gets its reward
score, and each token of the student's continuation the forward KL(teacher || student) of the
next-token distributions that produced it (`tnd_core.divergence.kd_divergence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tnd_core.config import CustomPPOConfig
from tnd_core.divergence import kd_divergence
from tnd_core.errors import ConfigError
from tnd_core.trainers.ppo_trainer.rollout import generation_kwargs


@dataclass
class Continuation:
    """One model's continuation of the prompt and the reward model's score of prompt + continuation."""

    text: str
    score: float


@dataclass
class CompareResult:
    """Both continuations of one prompt; `tokens` pairs each piece of the student's text with its KL."""

    prompt: str
    teacher: Continuation
    student: Continuation
    tokens: list[tuple[str, float]]
    mean_kl: float | None
    note: str = ""


def _first_eos_cut(ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    if eos_id is None:
        return ids
    hits = (ids == eos_id).nonzero()
    return ids[: int(hits[0])] if len(hits) else ids


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _generate(model: Any, prompt_ids: torch.Tensor, config: CustomPPOConfig, seed: int, tokenizer: Any) -> torch.Tensor:
    device = _device_of(model)
    ids = prompt_ids.to(device)
    kwargs = generation_kwargs(config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    # fork_rng keeps a training run's random stream untouched by this seeded sampling
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = model.generate(ids, torch.ones_like(ids), **kwargs)
    return _first_eos_cut(out[0, ids.shape[1] :], tokenizer.eos_token_id)


def _token_pieces(tokenizer: Any, prompt_ids: list[int], response_ids: list[int]) -> list[str]:
    # decode growing prefixes so each piece keeps the spaces a tokenizer puts between tokens
    pieces, previous = [], tokenizer.decode(prompt_ids, skip_special_tokens=True)
    for i in range(1, len(response_ids) + 1):
        text = tokenizer.decode(prompt_ids + response_ids[:i], skip_special_tokens=True)
        piece = text[len(previous) :] if text.startswith(previous) else tokenizer.decode(response_ids[i - 1 : i])
        # a special token decodes to nothing: show its name so the KL beside it has a visible owner
        pieces.append(piece or f" {tokenizer.convert_ids_to_tokens(response_ids[i - 1])}")
        previous = text
    return pieces


@torch.no_grad()
def per_token_kl(teacher: Any, student: Any, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions that produced each response token ([R], on the CPU).

    `prompt_ids` is [1, P], `response_ids` [R]; both models read the same ids (a shared vocabulary).
    """
    device, teacher_device = _device_of(student), _device_of(teacher)
    full = torch.cat([prompt_ids.to(device), response_ids.to(device)[None]], dim=1)
    mask = torch.ones_like(full)
    # the distribution at position i predicts token i + 1
    predicting = slice(prompt_ids.shape[1] - 1, full.shape[1] - 1)
    student_logits = student.get_student_logits(full, mask)[:, predicting]
    teacher_logits = teacher.get_teacher_logits(full.to(teacher_device), mask.to(teacher_device))[:, predicting]
    return kd_divergence(student_logits, teacher_logits.to(device), "forward_kl")[0].cpu()


def compare(
    teacher: Any, student: Any, reward_model: Any, prompt: str, config: CustomPPOConfig, seed: int
) -> CompareResult:
    """Teacher and student continue `prompt` with the config's generation settings and `seed`.

    Returns both texts with their reward scores and the student's tokens with their per-token KL
    (none when the two models use different tokenizers). Raises ConfigError for an empty prompt.
    """
    if not prompt or not prompt.strip():
        raise ConfigError("prompt", prompt, "a non-empty text to continue")
    tokenizer = student.tokenizer
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids[:, -config.max_prompt_length :]
    if prompt_ids.shape[1] == 0:
        raise ConfigError("prompt", prompt, "text the student's tokenizer turns into at least one token")
    teacher_tok = teacher.tokenizer or tokenizer
    teacher_prompt = teacher_tok(prompt, return_tensors="pt").input_ids[:, -config.max_prompt_length :]
    teacher_ids = _generate(teacher, teacher_prompt, config, seed, teacher_tok)
    student_ids = _generate(student, prompt_ids, config, seed, tokenizer)
    teacher_text = teacher_tok.decode(teacher_ids, skip_special_tokens=True)
    student_text = tokenizer.decode(student_ids, skip_special_tokens=True)
    full_teacher = teacher_tok.decode(teacher_prompt[0].tolist() + teacher_ids.tolist(), skip_special_tokens=True)
    full_student = tokenizer.decode(prompt_ids[0].tolist() + student_ids.tolist(), skip_special_tokens=True)
    scores = reward_model.score_texts([full_teacher, full_student]).float().cpu().tolist()
    tokens: list[tuple[str, float]] = []
    mean_kl, note = None, ""
    if teacher_tok.get_vocab() != tokenizer.get_vocab():
        note = "Teacher and student use different tokenizers: no per-token divergence."
        tokens = [(student_text, 0.0)]
    elif len(student_ids):
        kl = per_token_kl(teacher, student, prompt_ids, student_ids)
        pieces = _token_pieces(tokenizer, prompt_ids[0].tolist(), student_ids.tolist())
        tokens = list(zip(pieces, kl.tolist()))
        mean_kl = float(kl.mean())
    teacher_result, student_result = Continuation(teacher_text, scores[0]), Continuation(student_text, scores[1])
    return CompareResult(prompt, teacher_result, student_result, tokens, mean_kl, note)

"""Two models side by side on one prompt: what Compare in the app shows.

Each side (the teacher, a student, a checkpoint's student: any causal LM wrapper with a tokenizer)
continues the prompt several times with the trainer's own generation settings; sample i uses seed
`seed + i` on both sides, so repeated calls give the same samples and both sides face the same
random draws. Every continuation gets its reward score. The per-token divergence of a sample is
KL(other || this): at each token of this side's continuation, the forward KL from the other side's
next-token distribution to this side's (`tnd_core.divergence.kd_divergence`), both reading the same
ids. With the teacher on the left and the student on the right, the right side's colouring is the
KL(teacher || student) of the student's own trials.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tnd_core.config import CustomPPOConfig
from tnd_core.divergence import kd_divergence
from tnd_core.errors import ConfigError
from tnd_core.models.student import StudentModel
from tnd_core.trainers.ppo_trainer.checkpoint import STATE_FILE
from tnd_core.trainers.ppo_trainer.rollout import generation_kwargs

# The folder inside a checkpoint that holds the student (`StudentModel.save_pretrained`).
CHECKPOINT_STUDENT = "student"


@dataclass
class Continuation:
    """One continuation of the prompt and the reward model's score of prompt + continuation."""

    text: str
    score: float


@dataclass
class Sample(Continuation):
    """One of a side's samples: its seed, its token ids, and each token's piece of text with KL(other || this side)."""

    seed: int = 0
    ids: list[int] = field(default_factory=list)
    tokens: list[tuple[str, float]] = field(default_factory=list)
    mean_kl: float | None = None


@dataclass
class Side:
    """One side's samples and the mean and standard deviation of their reward scores."""

    label: str
    samples: list[Sample]

    @property
    def mean_score(self) -> float:
        return statistics.fmean(s.score for s in self.samples)

    @property
    def score_std(self) -> float:
        """Sample standard deviation of the scores (0 for a single sample)."""
        return statistics.stdev(s.score for s in self.samples) if len(self.samples) > 1 else 0.0

    @property
    def mean_kl(self) -> float | None:
        """KL(other || this side) averaged over every token of every sample; None without a divergence."""
        values = [kl for s in self.samples if s.mean_kl is not None for _, kl in s.tokens]
        return statistics.fmean(values) if values else None


@dataclass
class ModelComparison:
    """Both sides' samples of one prompt; `note` says why there is no divergence when there is none."""

    prompt: str
    left: Side
    right: Side
    note: str = ""


@dataclass
class CompareResult:
    """Teacher and student, one sample each; `tokens` pairs each piece of the student's text with its KL."""

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
    return _first_eos_cut(out[0, ids.shape[1] :], tokenizer.eos_token_id).cpu()


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


def _logits(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits [B, T, V] of a student, a teacher or a plain causal LM."""
    if hasattr(model, "get_student_logits"):
        return model.get_student_logits(ids, mask)
    if hasattr(model, "get_teacher_logits"):
        return model.get_teacher_logits(ids, mask)
    return model(input_ids=ids, attention_mask=mask).logits


@torch.no_grad()
def per_token_kl(reference: Any, model: Any, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions that produced each response token ([R], on the CPU).

    `prompt_ids` is [1, P], `response_ids` [R]; both models read the same ids (a shared vocabulary).
    With the teacher as `reference` and the student as `model` this is the distillation's forward KL.
    """
    device, reference_device = _device_of(model), _device_of(reference)
    full = torch.cat([prompt_ids.to(device), response_ids.to(device)[None]], dim=1)
    mask = torch.ones_like(full)
    # the distribution at position i predicts token i + 1
    predicting = slice(prompt_ids.shape[1] - 1, full.shape[1] - 1)
    model_logits = _logits(model, full, mask)[:, predicting]
    reference_logits = _logits(reference, full.to(reference_device), mask.to(reference_device))[:, predicting]
    return kd_divergence(model_logits, reference_logits.to(device), "forward_kl")[0].cpu()


def _prompt_ids(tokenizer: Any, prompt: str, config: CustomPPOConfig) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt").input_ids[:, -config.max_prompt_length :]
    if ids.shape[1] == 0:
        raise ConfigError("prompt", prompt, "text each model's tokenizer turns into at least one token")
    return ids


def compare_models(
    left: Any,
    right: Any,
    reward_model: Any,
    prompt: str,
    config: CustomPPOConfig,
    seed: int,
    samples: int = 1,
    labels: tuple[str, str] = ("left", "right"),
) -> ModelComparison:
    """`samples` continuations of `prompt` from each of `left` and `right` (sample i with seed `seed + i`
    on both sides), each scored by `reward_model`, each token with KL(other side || this side).

    Models are wrappers with a `tokenizer` (TeacherModel, StudentModel). The divergence needs one
    vocabulary; with two it is left out and `note` says so. Raises ConfigError for an empty prompt or
    a sample count below 1.
    """
    if not prompt or not prompt.strip():
        raise ConfigError("prompt", prompt, "a non-empty text to continue")
    if not isinstance(samples, int) or samples < 1:
        raise ConfigError("samples", samples, "an integer of at least 1")
    models = (left, right)
    # a model wrapped without a tokenizer reads the other's ids
    tokenizers = [left.tokenizer or right.tokenizer, right.tokenizer or left.tokenizer]
    prompts = [_prompt_ids(tok, prompt, config) for tok in tokenizers]
    seeds = [seed + i for i in range(samples)]
    responses = [[_generate(m, p, config, s, tok) for s in seeds] for m, p, tok in zip(models, prompts, tokenizers)]
    full_texts = [
        tok.decode(p[0].tolist() + r.tolist(), skip_special_tokens=True)
        for tok, p, side in zip(tokenizers, prompts, responses)
        for r in side
    ]
    scores = reward_model.score_texts(full_texts).float().cpu().tolist()
    shared_vocab = tokenizers[0].get_vocab() == tokenizers[1].get_vocab()
    sides = []
    for index, (model, tok, prompt_ids, side) in enumerate(zip(models, tokenizers, prompts, responses)):
        other = models[1 - index]
        side_samples = []
        for i, response in enumerate(side):
            text = tok.decode(response, skip_special_tokens=True)
            # without a divergence the text still shows, uncoloured
            plain = [(text, 0.0)] if text else []
            sample = Sample(text, scores[index * samples + i], seed=seeds[i], ids=response.tolist(), tokens=plain)
            if shared_vocab and len(response):
                kl = per_token_kl(other, model, prompt_ids, response)
                pieces = _token_pieces(tok, prompt_ids[0].tolist(), response.tolist())
                sample.tokens, sample.mean_kl = list(zip(pieces, kl.tolist())), float(kl.mean())
            side_samples.append(sample)
        sides.append(Side(labels[index], side_samples))
    note = "" if shared_vocab else "The two models use different tokenizers: no per-token divergence."
    return ModelComparison(prompt, sides[0], sides[1], note)


def compare(
    teacher: Any, student: Any, reward_model: Any, prompt: str, config: CustomPPOConfig, seed: int
) -> CompareResult:
    """Teacher and student continue `prompt` once with the config's generation settings and `seed`.

    Returns both texts with their reward scores and the student's tokens with their per-token
    KL(teacher || student) (none when the two models use different tokenizers). Raises ConfigError
    for an empty prompt.
    """
    result = compare_models(teacher, student, reward_model, prompt, config, seed, 1, ("teacher", "student"))
    teacher_sample, student_sample = result.left.samples[0], result.right.samples[0]
    tokens = student_sample.tokens if student_sample.mean_kl is not None or result.note else []
    return CompareResult(
        prompt,
        Continuation(teacher_sample.text, teacher_sample.score),
        Continuation(student_sample.text, student_sample.score),
        tokens,
        student_sample.mean_kl,
        result.note,
    )


def load_checkpoint_student(checkpoint: str | Path, tokenizer: Any = None) -> StudentModel:
    """The student saved in a complete checkpoint folder (weights and value head), on the CPU.

    Its own tokenizer when the checkpoint saved one, else `tokenizer`. Raises ConfigError naming the
    checkpoint when the folder is not a complete checkpoint with a student.
    """
    path = Path(checkpoint)
    folder = path / CHECKPOINT_STUDENT
    if not (path / STATE_FILE).is_file() or not folder.is_dir():
        raise ConfigError("checkpoint", path.name, f"a complete checkpoint folder (with {STATE_FILE} and a student)")
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    return StudentModel.from_pretrained(folder, tokenizer=None if has_tokenizer else tokenizer)

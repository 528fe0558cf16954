"""Compare tab: teacher and student continue the same prompt with the same sampling settings and seed.

Each continuation gets its reward score; the student's tokens are coloured by the per-token
KL(teacher || student) of the next-token distributions. During training the request runs between
two steps of the training thread, on the current student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch
import torch.nn.functional as F

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError
from tnd_core.trainers.ppo_trainer.rollout import generation_kwargs

from app.context import AppContext, LoadedModels
from app.forms import Form, parse_form
from app.runner import describe_exception

GENERATION_FIELDS = ("max_new_tokens", "temperature", "top_k", "top_p", "do_sample", "max_prompt_length")


@dataclass
class Continuation:
    text: str
    score: float


@dataclass
class CompareResult:
    """What the Compare tab shows for one prompt."""

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


def _generate(model: Any, prompt_ids: torch.Tensor, config: CustomPPOConfig, seed: int, tokenizer: Any) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = prompt_ids.to(device)
    # the trainer's own sampling settings, so Compare shows what a trial or demo would look like
    kwargs = generation_kwargs(config, tokenizer.pad_token_id, tokenizer.eos_token_id)
    # fork_rng keeps the training run's random stream untouched by the app's seeded sampling
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
    """KL(teacher || student) of the next-token distributions that produced each response token."""
    device = next(student.parameters()).device
    full = torch.cat([prompt_ids.to(device), response_ids.to(device)[None]], dim=1)
    mask = torch.ones_like(full)
    start = prompt_ids.shape[1] - 1
    end = full.shape[1] - 1
    t_logp = F.log_softmax(teacher.get_teacher_logits(full.to(next(teacher.parameters()).device), mask.to(next(teacher.parameters()).device)).float().to(device)[0, start:end], -1)
    s_logp = F.log_softmax(student.get_student_logits(full, mask).float()[0, start:end], -1)
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1).cpu()


def compare(teacher: Any, student: Any, reward: Any, prompt: str, config: CustomPPOConfig, seed: int) -> CompareResult:
    """Teacher and student continue `prompt` with the same settings and seed; scores and per-token KL."""
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
    scores = reward.score_texts([full_teacher, full_student]).float().cpu().tolist()
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
    return CompareResult(prompt, Continuation(teacher_text, scores[0]), Continuation(student_text, scores[1]), tokens, mean_kl, note)


def highlight(tokens: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Scale KLs to [0, 1] for gr.HighlightedText (darker = the teacher disagrees more)."""
    top = max((kl for _, kl in tokens), default=0.0)
    return [(piece, round(kl / top, 3) if top > 0 else 0.0) for piece, kl in tokens]


def eval_prompts(ctx: AppContext, limit: int = 30, words: int = 3) -> list[str]:
    """Prompts of the bundle's held-out sentences (their `prompt`, else their first few words)."""
    paths = ctx.bundle.paths if ctx.bundle.ready else None
    path = Path(getattr(paths, "eval", "") or "")
    if not path.is_file():
        return []
    prompts = []
    with path.open() as handle:
        for line in handle:
            record = json.loads(line)
            text = record.get("prompt") or " ".join(str(record.get("text", "")).split()[:words])
            head = text.strip()
            if head and head not in prompts:
                prompts.append(head)
            if len(prompts) >= limit:
                break
    return prompts


def _ensure_loaded(ctx: AppContext, config: CustomPPOConfig) -> LoadedModels:
    from app.models_tab import load_models

    wanted = {"teacher": config.teacher_name_or_path, "student": config.student_name_or_path, "reward": config.reward_model_name_or_path}
    if ctx.models.student is None or ctx.models.sources != wanted:
        return load_models(ctx, config)
    return ctx.models


def run_compare(ctx: AppContext, prompt: str, config: CustomPPOConfig, seed: int) -> tuple[CompareResult, str]:
    """Compare on the current run's models between two steps, or on the Models tab's models when none runs.

    A run that holds no teacher or reward model (its config needs neither) borrows them from the
    Models tab, loaded here, outside the training thread.
    """
    trainer = ctx.runner.trainer
    spare = None
    if trainer is None or trainer.teacher is None or trainer.reward_model is None:
        spare = _ensure_loaded(ctx, config)

    def work(trainer: Any) -> tuple[CompareResult, str]:
        if trainer is None:
            who = f"student loaded from `{spare.sources.get('student')}`"
            return compare(spare.teacher, spare.student, spare.reward, prompt, config, seed), who
        teacher = trainer.teacher or spare.teacher
        reward = trainer.reward_model or spare.reward
        who = f"student of the current run at step {ctx.runner.store.step}"
        return compare(teacher, trainer.student, reward, prompt, config, seed), who

    return ctx.runner.run_between_steps(work)


def build(ctx: AppContext, form: Form) -> None:
    """Create the Compare tab: prompt, seed, and the two continuations side by side."""
    gr.Markdown(
        "Teacher and student continue the same prompt with the generation settings of the Config tab and the same seed. "
        "During training the current student answers (between two steps)."
    )
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", scale=3, elem_id="compare-prompt")
        pick = gr.Dropdown(choices=[], label="…or pick from the eval set", scale=2, allow_custom_value=True)
        seed = gr.Number(value=0, precision=0, label="Seed", scale=1)
    run = gr.Button("Generate", variant="primary", elem_id="btn-compare")
    note = gr.Markdown("", elem_id="compare-note")
    with gr.Row():
        with gr.Column():
            teacher_score = gr.Markdown("### Teacher", elem_id="compare-teacher-score")
            teacher_text = gr.Textbox(label="Teacher", lines=3, interactive=False, elem_id="compare-teacher")
        with gr.Column():
            student_score = gr.Markdown("### Student", elem_id="compare-student-score")
            student_text = gr.Textbox(label="Student", lines=3, interactive=False, elem_id="compare-student")
    tokens = gr.HighlightedText(label="Student tokens, coloured by KL(teacher || student)", show_legend=False, elem_id="compare-kl")

    pick.focus(lambda: gr.update(choices=eval_prompts(ctx)), outputs=pick, queue=False)
    pick.change(lambda p: p or gr.skip(), inputs=pick, outputs=prompt, queue=False)

    gen_names = [n for n in form.names if n in GENERATION_FIELDS or n.endswith("_name_or_path") or n == "trust_remote_code"]

    def on_compare(text: str, seed_value: float | None, *values: Any) -> list[Any]:
        parsed, errors = parse_form(gen_names, list(values))
        try:
            if errors:
                raise errors[0]
            config = CustomPPOConfig.from_dict({**ctx.initial_config().to_dict(), **parsed})
            seed_int = int(seed_value or 0)
            result, who = run_compare(ctx, text, config, seed_int)
        except Exception as exc:  # shown in words; the app keeps serving
            return [f"❌ {describe_exception(exc)}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()]
        kl_text = f" · mean KL(teacher‖student) {result.mean_kl:.3f} nats/token" if result.mean_kl is not None else ""
        return [
            f"Seed {seed_int}, {who}{kl_text}. {result.note}".strip(),
            f"### Teacher · reward {result.teacher.score:.3f}",
            result.teacher.text,
            f"### Student · reward {result.student.score:.3f}",
            result.student.text,
            highlight(result.tokens),
        ]

    run.click(
        on_compare,
        inputs=[prompt, seed, *[form.controls[n] for n in gen_names]],
        outputs=[note, teacher_score, teacher_text, student_score, student_text, tokens],
    )

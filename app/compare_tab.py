"""Compare tab: teacher and student continue the same prompt with the same sampling settings and seed.

Each continuation gets its reward score; the student's tokens are coloured by the per-token
KL(teacher || student) of the next-token distributions (`tnd_core.evaluation.compare`, run by
`app.services.run_compare`: during training between two steps, on the current student).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.context import AppContext
from app.forms import Form, parse_form
from app.runner import describe_exception
from app.services import eval_prompts, parse_seed, run_compare
from tnd_core.config import CustomPPOConfig, specs_tagged


def highlight(tokens: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Scale KLs to [0, 1] for gr.HighlightedText (darker = the teacher disagrees more)."""
    top = max((kl for _, kl in tokens), default=0.0)
    return [(piece, round(kl / top, 3) if top > 0 else 0.0) for piece, kl in tokens]


def build(ctx: AppContext, form: Form) -> None:
    """Create the Compare tab: prompt, seed, and the two continuations side by side."""
    gr.Markdown(
        "Teacher and student continue the same prompt with the generation settings of the Config tab "
        "and the same seed. "
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
    tokens = gr.HighlightedText(
        label="Student tokens, coloured by KL(teacher || student)", show_legend=False, elem_id="compare-kl"
    )

    pick.focus(lambda: gr.update(choices=eval_prompts(ctx)), outputs=pick, queue=False)
    pick.change(lambda p: p or gr.skip(), inputs=pick, outputs=prompt, queue=False)

    # the options that decide what Compare generates, and with which models
    option_names = list(dict.fromkeys(s.name for s in [*specs_tagged("generation"), *specs_tagged("model_source")]))

    def on_compare(text: str, seed_value: float | None, request: gr.Request, *values: Any) -> list[Any]:
        parsed, errors = parse_form(option_names, list(values))
        try:
            if errors:
                raise errors[0]
            config = CustomPPOConfig.from_dict({**ctx.initial_config().to_dict(), **parsed})
            seed_int = parse_seed(seed_value)
            result, who = run_compare(ctx, text or "", config, seed_int, request.session_hash)
        except Exception as exc:  # shown in words; the app keeps serving
            message = ctx.policy.redact(describe_exception(exc))
            return [f"❌ {message}", gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()]
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
        inputs=[prompt, seed, *[form.controls[n] for n in option_names]],
        outputs=[note, teacher_score, teacher_text, student_score, student_text, tokens],
        concurrency_limit=1,
        concurrency_id="compare",  # shared with the API's /compare: one Compare at a time
    )

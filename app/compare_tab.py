"""Compare tab: any two of the teacher, the current student and a run's checkpoint continue the same prompt.

Both sides sample several continuations with the generation settings of the Config tab; sample i uses
seed + i on both sides. Each continuation gets its reward score, and each token the divergence
KL(other side || this side) of the next-token distributions at that token (`tnd_core.evaluation.compare`,
run by `app.services.run_compare_models`: during training between two steps, on the current student).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.context import AppContext
from app.forms import Form, parse_form
from app.runner import describe_exception
from app.services import (
    STUDENT_CHOICE,
    TEACHER_CHOICE,
    compare_choices,
    eval_prompts,
    max_compare_samples,
    parse_seed,
    run_compare_models,
)
from tnd_core.config import CustomPPOConfig, specs_tagged

SAMPLE_HEADERS = ["seed", "reward", "mean KL", "text"]


def highlight(tokens: list[tuple[str, float]], top: float | None = None) -> list[tuple[str, float]]:
    """Scale KLs to [0, 1] by `top` (default: the largest here) for gr.HighlightedText; darker = the other
    side disagrees more."""
    top = max((kl for _, kl in tokens), default=0.0) if top is None else top
    return [(piece, round(min(kl / top, 1.0), 3) if top > 0 else 0.0) for piece, kl in tokens]


def side_heading(name: str, other: str, side: Any) -> str:
    """One side's summary: what it is, mean reward ± spread over its samples, mean KL(other || this side)."""
    kl = f" · mean KL({other}‖{name.lower()}) {side.mean_kl:.3f} nats/token" if side.mean_kl is not None else ""
    count = len(side.samples)
    return (
        f"### {name}: {side.label}\nreward {side.mean_score:.3f} ± {side.score_std:.3f} "
        f"over {count} sample{'s' if count != 1 else ''}{kl}"
    )


def sample_rows(side: Any) -> list[list[Any]]:
    """The table of one side's samples: seed, reward, mean KL, text."""
    return [
        [s.seed, round(s.score, 4), None if s.mean_kl is None else round(s.mean_kl, 4), s.text] for s in side.samples
    ]


def shown_tokens(result: Any, index: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Sample `index`'s tokens of both sides, scaled by one maximum so the two colourings compare."""
    index = max(0, min(index, len(result.left.samples) - 1))
    left, right = result.left.samples[index].tokens, result.right.samples[index].tokens
    top = max((kl for _, kl in left + right), default=0.0)
    return highlight(left, top), highlight(right, top)


def build(ctx: AppContext, form: Form, owner: gr.BrowserState | None = None) -> None:
    """Create the Compare tab: two model pickers, prompt, seed, samples, and both sides' samples."""
    gr.Markdown(
        "Two models continue the same prompt with the generation settings of the Config tab: the teacher, "
        "the current student (during training, the run's student between two steps) or a saved checkpoint "
        "of a run. Sample *i* uses seed + *i* on both sides. Each token is coloured by KL(other side ‖ this "
        "side): how far the other model's next-token distribution is from the one that produced the token."
    )
    top = max_compare_samples(ctx)
    with gr.Row():
        left_pick = gr.Dropdown(
            choices=[TEACHER_CHOICE, STUDENT_CHOICE], value=TEACHER_CHOICE, label="Left", elem_id="compare-left-model"
        )
        right_pick = gr.Dropdown(
            choices=[TEACHER_CHOICE, STUDENT_CHOICE], value=STUDENT_CHOICE, label="Right", elem_id="compare-right-model"
        )
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", scale=3, elem_id="compare-prompt")
        pick = gr.Dropdown(choices=[], label="…or pick from the eval set", scale=2, allow_custom_value=True)
        seed = gr.Number(value=0, precision=0, label="Seed", scale=1)
        samples = gr.Slider(
            1, top, value=min(4, top), step=1, label="Samples per side", scale=1, elem_id="compare-samples"
        )
    run = gr.Button("Generate", variant="primary", elem_id="btn-compare")
    note = gr.Markdown("", elem_id="compare-note")
    shown = gr.Slider(1, top, value=1, step=1, label="Tokens of sample", elem_id="compare-shown")
    with gr.Row():
        with gr.Column():
            left_score = gr.Markdown("### Left", elem_id="compare-left-score")
            left_tokens = gr.HighlightedText(label="Left tokens", show_legend=False, elem_id="compare-left-kl")
            left_table = gr.Dataframe(headers=SAMPLE_HEADERS, interactive=False, wrap=True, elem_id="compare-left")
        with gr.Column():
            right_score = gr.Markdown("### Right", elem_id="compare-right-score")
            right_tokens = gr.HighlightedText(label="Right tokens", show_legend=False, elem_id="compare-right-kl")
            right_table = gr.Dataframe(headers=SAMPLE_HEADERS, interactive=False, wrap=True, elem_id="compare-right")
    last = gr.State(None)  # the last comparison, so picking another sample's tokens recomputes nothing

    # without the browser's owner token (a page built without one), each session's own token stands in
    owner_token = owner if owner is not None else gr.State(None)

    def refresh_choices(token: str | None, request: gr.Request) -> tuple[Any, Any]:
        choices = compare_choices(ctx, ctx.owner_token(token, request.session_hash))
        return gr.update(choices=choices), gr.update(choices=choices)

    for picker in (left_pick, right_pick):
        picker.focus(refresh_choices, inputs=owner_token, outputs=[left_pick, right_pick], queue=False)
    pick.focus(lambda: gr.update(choices=eval_prompts(ctx)), outputs=pick, queue=False)
    pick.change(lambda p: p or gr.skip(), inputs=pick, outputs=prompt, queue=False)

    # the options that decide what Compare generates, and with which models
    option_names = list(dict.fromkeys(s.name for s in [*specs_tagged("generation"), *specs_tagged("model_source")]))
    outputs = [note, left_score, right_score, left_tokens, right_tokens, left_table, right_table, last, shown]

    def on_compare(
        left: str,
        right: str,
        text: str,
        seed_value: float | None,
        count: float,
        token: str | None,
        request: gr.Request,
        *values: Any,
    ) -> list[Any]:
        parsed, errors = parse_form(option_names, list(values))
        try:
            if errors:
                raise errors[0]
            config = CustomPPOConfig.from_dict({**ctx.initial_config().to_dict(), **parsed})
            seed_int = parse_seed(seed_value)
            session = request.session_hash
            who = ctx.owner_token(token, session)
            result, labels = run_compare_models(ctx, text or "", config, seed_int, left, right, count, session, who)
        except Exception as exc:  # shown in words; the app keeps serving
            message = ctx.policy.redact(describe_exception(exc))
            return [f"❌ {message}", *[gr.skip()] * (len(outputs) - 1)]
        left_shown, right_shown = shown_tokens(result, 0)
        return [
            f"Seeds {seed_int}–{seed_int + len(result.left.samples) - 1}. Left: {labels['left']}. "
            f"Right: {labels['right']}. {result.note}".strip(),
            side_heading("Left", "right", result.left),
            side_heading("Right", "left", result.right),
            left_shown,
            right_shown,
            sample_rows(result.left),
            sample_rows(result.right),
            result,
            gr.update(value=1, maximum=max(2, len(result.left.samples))),
        ]

    def on_shown(result: Any, index: float) -> tuple[Any, Any]:
        if result is None:
            return gr.skip(), gr.skip()
        return shown_tokens(result, int(index) - 1)

    run.click(
        on_compare,
        inputs=[left_pick, right_pick, prompt, seed, samples, owner_token, *[form.controls[n] for n in option_names]],
        outputs=outputs,
        concurrency_limit=1,
        concurrency_id="compare",  # shared with the API's /compare and /compare_models: one Compare at a time
    )
    shown.change(on_shown, inputs=[last, shown], outputs=[left_tokens, right_tokens], queue=False)

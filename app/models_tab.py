"""Models tab: presets of common pairs, the teacher, student and reward model sources, LoRA and memory options;
load the models with a visible status line."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from app.context import AppContext, LoadedModels, device_name, zero_gpu
from app.forms import Form, form_values
from app.runner import describe_exception
from app.services import load_models
from tnd_core.config import CustomPPOConfig
from tnd_core.models.presets import MEMORY_OPTIONS, PRESETS, preset_by_name, suggest_memory_options

COLUMNS = ["role", "source", "parameters", "device", "dtype"]


def describe_models(models: LoadedModels) -> pd.DataFrame:
    """One row per loaded model: role, source, parameters, device, dtype."""
    rows = []
    for role, source in models.sources.items():
        wrapper = getattr(models, role)
        first = next(wrapper.parameters())
        rows.append(
            {
                "role": role.replace("_", " "),
                "source": source,
                "parameters": f"{sum(p.numel() for p in wrapper.parameters()):,}",
                "device": str(first.device),
                "dtype": str(first.dtype).replace("torch.", ""),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def apply_preset(ctx: AppContext, name: str) -> tuple[dict[str, Any], str]:
    """The option values a preset sets (its models, and LoRA / gradient checkpointing / frozen dtype suggested
    by the memory plan on this app's device) and a note saying what was chosen and why."""
    preset = preset_by_name(name)
    device = device_name()
    memory, plan = suggest_memory_options(preset, ctx.initial_config(), device=device)
    values = {**preset.sources(), **memory}
    changed = ", ".join(f"`{k}={v}`" for k, v in memory.items() if v != MEMORY_OPTIONS[k])
    verdict = "fits" if plan.fits else "does **not** fit"
    advice = f"suggested: {changed}" if changed else "no LoRA or lower precision needed"
    note = (
        f"**{preset.name}**: {preset.note}\n\n"
        f"Memory plan on **{device}**: about {plan.total_gb:.1f} GB of {plan.available_gb:.1f} GB free "
        f"({verdict}; {advice}; with the current batch and lengths, checked again before the run).\n\n"
        f"Prompts: set the Data tab to `{preset.dataset}`, column `{preset.prompt_column}`."
    )
    return values, note


def hardware_note(ctx: AppContext) -> str:
    """What the app's hardware and mode mean for training (ZeroGPU, hosted mode), or ''."""
    notes = []
    if zero_gpu():
        notes.append(
            "⚠ **ZeroGPU hardware**: a GPU exists here only inside short decorated calls, so background "
            "training runs on the **CPU**. Training needs a Space with a dedicated GPU (or the CPU, slowly)."
        )
    if ctx.policy.hosted:
        notes.append(
            "🔒 **Hosted mode**: models come from `bundle`, a Hugging Face Hub id (safetensors weights, at most "
            f"{ctx.policy.limit('model_parameters'):,} parameters) or a folder inside the app's data folder; "
            "a model's own code never runs."
        )
    return "\n\n".join(notes)


def build(ctx: AppContext, form: Form, config: CustomPPOConfig, owner: gr.BrowserState) -> None:
    """Create the tab's controls (the `models` option group) and wire its Load button."""
    where = "a Hub id or a folder in the app's data folder" if ctx.policy.hosted else "a hub id or a local folder"
    gr.Markdown(
        "Pick the **teacher** (frozen, writes demonstrations and the distillation targets), the **student** "
        "(trained) and the **reward model** (scores text). `bundle` uses the embedded baby-language models; "
        f"otherwise give {where}."
    )
    gr.Markdown(hardware_note(ctx), elem_id="hardware-note")
    bundle_line = gr.Markdown(ctx.bundle.status_line(), elem_id="bundle-status")
    with gr.Row():
        preset = gr.Dropdown(
            choices=[p.name for p in PRESETS], value=None, label="Preset", scale=3, elem_id="model-preset"
        )
        apply = gr.Button("Apply preset", size="sm", scale=1, elem_id="apply-preset")
    preset_note = gr.Markdown("", elem_id="preset-note")
    controls = form.add_group("models", config)
    # LoRA and the frozen models' precision decide whether a pair fits: they sit with the models
    with gr.Accordion("LoRA and memory", open=False):
        memory_controls = {**form.add_group("lora", config), **form.add_group("memory", config)}
    filled = {**controls, **memory_controls}
    load_button = gr.Button("Load models", variant="secondary", elem_id="load-models")
    status = gr.Markdown("", elem_id="models-status")
    table = gr.Dataframe(value=describe_models(ctx.models), interactive=False, label="Loaded models")

    shown = gr.State("")

    bundle_timer = gr.Timer(ctx.poll_s * 2)

    def bundle_tick(last: str) -> Any:
        # once the bundle is ready (or failed) its line is final: stop polling, each tick costs the browser
        settled = ctx.bundle.settled
        line = ctx.bundle.status_line()
        stop = gr.Timer(active=False) if settled else gr.skip()
        return (gr.skip(), gr.skip(), stop) if line == last else (line, line, stop)

    bundle_timer.tick(
        bundle_tick, inputs=shown, outputs=[bundle_line, shown, bundle_timer], show_progress="hidden", queue=False
    )

    def on_load(
        token: str | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's idiom)
        *values: Any,
    ) -> tuple[str, pd.DataFrame]:
        try:
            config = ctx.initial_config().replace(**dict(zip(controls, values)))
            loaded = load_models(ctx, config, progress, owner=ctx.owner_token(token, request.session_hash))
        except Exception as exc:  # a bad id or path is the user's to fix: show it in words
            return f"❌ {ctx.policy.redact(describe_exception(exc))}", describe_models(ctx.models)
        return f"✅ Models loaded on **{device_name()}**.", describe_models(loaded)

    def on_apply(name: str | None) -> list[Any]:
        if not name:
            return [gr.skip()] * len(filled) + ["Pick a preset first."]
        try:
            values, note = apply_preset(ctx, name)
        except Exception as exc:  # the memory plan of an unusual device: say so, change nothing
            return [gr.skip()] * len(filled) + [f"❌ {ctx.policy.redact(describe_exception(exc))}"]
        current = ctx.initial_config().replace(**values)
        shown = dict(zip(filled, form_values(current, list(filled))))
        # options the host locks keep their value
        return [shown[n] if n in values and n not in form.locked else gr.skip() for n in filled] + [note]

    apply.click(on_apply, inputs=preset, outputs=[*filled.values(), preset_note], api_name="apply_preset")

    load_button.click(
        on_load,
        inputs=[owner, *controls.values()],
        outputs=[status, table],
        api_name="load_models",
        concurrency_limit=1,
        concurrency_id="load",
    )

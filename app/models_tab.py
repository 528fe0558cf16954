"""Models tab: teacher, student and reward model sources; load them with a visible status line."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from app.context import AppContext, LoadedModels, device_name
from app.forms import Form
from app.runner import describe_exception
from app.services import load_models
from tnd_core.config import CustomPPOConfig

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


def build(ctx: AppContext, form: Form, config: CustomPPOConfig) -> None:
    """Create the tab's controls (the `models` option group) and wire its Load button."""
    gr.Markdown(
        "Pick the **teacher** (frozen, writes demonstrations and the distillation targets), the **student** "
        "(trained) and the **reward model** (scores text). `bundle` uses the embedded baby-language models; "
        "otherwise give a hub id or a local folder."
    )
    bundle_line = gr.Markdown(ctx.bundle.status_line(), elem_id="bundle-status")
    controls = form.add_group("models", config)
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

    def on_load(progress: gr.Progress = gr.Progress(), *values: Any) -> tuple[str, pd.DataFrame]:  # noqa: B008 (Gradio's idiom)
        try:
            config = ctx.initial_config().replace(**dict(zip(controls, values)))
            loaded = load_models(ctx, config, progress)
        except Exception as exc:  # a bad id or path is the user's to fix: show it in words
            return f"❌ {describe_exception(exc)}", describe_models(ctx.models)
        return f"✅ Models loaded on **{device_name()}**.", describe_models(loaded)

    load_button.click(on_load, inputs=list(controls.values()), outputs=[status, table])

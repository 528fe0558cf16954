"""Config tab: every trainer option in accordions, a live check, presets and the equivalent CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from app.context import AppContext
from app.forms import Form, control_updates, errors_markdown
from app.services import CONFIG_FILE, list_presets, load_preset, save_preset, write_config_file
from tnd_core.config import GROUPS, CustomPPOConfig
from tnd_core.errors import ConfigError, TndError


def reproduce_commands(config_file: str = CONFIG_FILE) -> str:
    """Shell commands that run the same training outside the app."""
    return (
        f"# save the config above as {config_file} (or use the Download button), then:\n"
        f"tnd train --config {config_file}\n"
        f"# the same on every GPU of the machine, through accelerate:\n"
        f"accelerate launch -m tnd_core.cli train --config {config_file}\n"
    )


def build(
    ctx: AppContext, form: Form, config: CustomPPOConfig, saved_values: gr.BrowserState, owner: gr.BrowserState
) -> gr.Markdown:
    """Create the option accordions and wire checking, presets and downloads; returns the check summary."""
    gr.Markdown("Every option of the trainer. Problems show under the field and in the summary before a run can start.")
    summary = gr.Markdown("Config OK.", elem_id="config-check")
    with gr.Row():
        recommended = gr.Button("Bundle recommended", size="sm")
        defaults = gr.Button("Library defaults", size="sm")
        upload = gr.UploadButton("Load YAML/JSON…", file_types=[".yaml", ".yml", ".json"], size="sm")
        download = gr.Button("Download config", size="sm", elem_id="download-config")
    with gr.Row():
        preset_name = gr.Textbox(label="Preset name", scale=2, max_lines=1)
        save = gr.Button("Save preset", size="sm", scale=1)
        preset_pick = gr.Dropdown(
            choices=[] if ctx.policy.hosted else list_presets(ctx), label="Saved presets", scale=2
        )
        load = gr.Button("Load preset", size="sm", scale=1)
    preset_status = gr.Markdown("")
    config_file = gr.File(label="Config file", visible=True, interactive=False)
    # every option the tabs built before this one (Models, Data) do not show, one accordion per group
    for i, group in enumerate(form.groups_without_controls()):
        with gr.Accordion(GROUPS[group], open=i == 0):
            form.add_group(group, config)
    with gr.Accordion("Reproduce outside the app", open=True):
        yaml_box = gr.Code(config.to_yaml(), language="yaml", label=CONFIG_FILE, interactive=False)
        gr.Code(reproduce_commands(), language="shell", label="Commands", interactive=False)

    def check(*values: Any) -> list[Any]:
        cfg, errors = form.read(values)
        if cfg is not None:
            try:
                ctx.policy.check_limits(cfg)  # a hosted app's limits show as the user types, like any other check
            except ConfigError as exc:
                cfg, errors = None, [exc]
        yaml_text = cfg.to_yaml() if cfg else "# fix the problems listed above first\n"
        saved = dict(zip(form.names, values))
        return [errors_markdown(errors), yaml_text, saved, *control_updates(form.names, errors)]

    gr.on(
        [c.change for c in form.components],
        check,
        inputs=form.components,
        outputs=[summary, yaml_box, saved_values, *form.components],
        trigger_mode="always_last",
        show_progress="hidden",
        queue=False,
    )

    def fill(cfg: CustomPPOConfig, message: str) -> list[Any]:
        return [message, *form.fill(cfg)]

    recommended.click(
        lambda: fill(
            ctx.initial_config(),
            "Loaded the bundle's recommended values."
            if ctx.bundle.ready
            else "The bundle is not ready yet: loaded the library defaults.",
        ),
        outputs=[preset_status, *form.components],
    )
    defaults.click(
        lambda: fill(CustomPPOConfig(), "Loaded the library defaults."), outputs=[preset_status, *form.components]
    )

    def on_upload(file: Any) -> list[Any]:
        try:
            cfg = CustomPPOConfig.load(file if isinstance(file, str) else file.name)
        except TndError as exc:
            return [f"❌ {ctx.policy.redact(str(exc))}", *[gr.skip()] * len(form.components)]
        return fill(cfg, f"Loaded {Path(str(file)).name}.")

    upload.upload(on_upload, inputs=upload, outputs=[preset_status, *form.components])

    def on_download(*values: Any) -> tuple[str, Any]:
        cfg, errors = form.read(values)
        if cfg is None:
            return f"❌ Fix the config first:\n{errors_markdown(errors)}", None
        return f"Config written to {CONFIG_FILE}.", write_config_file(cfg)

    download.click(on_download, inputs=form.components, outputs=[preset_status, config_file])

    def on_save(name: str, token: str | None, request: gr.Request, *values: Any) -> tuple[str, Any]:
        cfg, errors = form.read(values)
        if cfg is None:
            return f"❌ Fix the config first:\n{errors_markdown(errors)}", gr.skip()
        token = ctx.owner_token(token, request.session_hash)
        try:
            path = save_preset(ctx, name, cfg, token)
        except TndError as exc:
            return f"❌ {exc}", gr.skip()
        where = "" if ctx.policy.hosted else f" ({path})"
        choices = list_presets(ctx, token)
        return f"Saved preset **{name.strip()}**{where}.", gr.update(choices=choices, value=name.strip())

    save.click(
        on_save,
        inputs=[preset_name, owner, *form.components],
        outputs=[preset_status, preset_pick],
        concurrency_limit=2,
    )

    def on_load(name: str, token: str | None, request: gr.Request) -> list[Any]:
        try:
            return fill(
                load_preset(ctx, name, ctx.owner_token(token, request.session_hash)), f"Loaded preset **{name}**."
            )
        except TndError as exc:
            return [f"❌ {exc}", *[gr.skip()] * len(form.components)]

    load.click(on_load, inputs=[preset_pick, owner], outputs=[preset_status, *form.components])

    def refresh_presets(token: str | None, request: gr.Request) -> Any:
        return gr.update(choices=list_presets(ctx, ctx.owner_token(token, request.session_hash)))

    preset_pick.focus(refresh_presets, inputs=owner, outputs=preset_pick, queue=False)
    return summary

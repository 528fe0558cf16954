"""Data tab: prompts from the bundle, a hub dataset, or an uploaded CSV/JSONL with a column picker."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import pandas as pd

from app.context import AppContext
from app.forms import Form
from app.runner import describe_exception
from app.services import MAX_UPLOAD_MB, keep_upload, preview_source, prompts_table
from tnd_core.config import CustomPPOConfig
from tnd_core.data.prompts import TABLE_SUFFIXES, is_chat, load_prompts, preview_table, render_chat
from tnd_core.errors import ConfigError
from tnd_core.sources import is_bundle

PREVIEW_ROWS = 8
RENDERED = "rendered prompt"
NOT_LOADED = "(load the models on the Models tab to see this chat rendered with the student's chat template)"
SOURCES = ("bundle", "hub dataset", "uploaded file")


def rendered_prompts(ctx: AppContext, values: list[Any], column: str) -> list[str] | None:
    """What each row of a chat column becomes: the text the loaded student's chat template makes of it (as
    training renders it), or why it cannot be shown. None when no row holds chat messages."""
    if not any(is_chat(v) for v in values):
        return None
    with ctx.models_lock:
        tokenizer = getattr(ctx.models.student, "tokenizer", None)
    if tokenizer is None:
        return [NOT_LOADED if is_chat(v) else str(v) for v in values]
    try:
        return [render_chat(v, tokenizer, column) if is_chat(v) else str(v) for v in values]
    except ConfigError as exc:  # no chat template: the run would refuse this column, say so in the preview
        return [f"❌ {exc.allowed}"] * len(values)


def _with_rendered(ctx: AppContext, rows: pd.DataFrame, column: str) -> pd.DataFrame:
    rendered = rendered_prompts(ctx, rows[column].tolist(), column) if column in rows.columns else None
    if rendered is None:
        return rows
    rows = rows.copy()
    rows[column] = [json.dumps(v, ensure_ascii=False) if is_chat(v) else v for v in rows[column]]  # shown as JSON
    rows.insert(list(rows.columns).index(column) + 1, RENDERED, rendered)
    return rows


def preview(
    ctx: AppContext, source: str, column: str | None, owner: str | None = None
) -> tuple[list[str], pd.DataFrame, int, str]:
    """Columns, first rows, number of prompts and the prompt column of a source (bundle, file or hub id).

    With `column` None (a fresh upload) the column is 'prompt' when there is one, else the first. A column
    of chat messages gets a 'rendered prompt' column beside it (`rendered_prompts`).
    """
    path = prompts_table(ctx, source, owner)
    if path is None:
        column = column or "prompt"
        prompts = load_prompts(preview_source(ctx, source, owner), column)
        rows = pd.DataFrame({column: prompts[:PREVIEW_ROWS]})
        return [column], _with_rendered(ctx, rows, column), len(prompts), column
    rows = preview_table(path, PREVIEW_ROWS)
    names = [str(c) for c in rows.columns]
    if column is None:
        column = "prompt" if "prompt" in names else (names[0] if names else "prompt")
    return names, _with_rendered(ctx, rows, column), len(load_prompts(str(path), column)), column


def build(ctx: AppContext, form: Form, config: CustomPPOConfig, owner: gr.BrowserState) -> None:
    """Create the tab's controls (the `data` option group), the upload, the column picker and the preview."""
    upload_mb = ctx.policy.limit("upload_mb") if ctx.policy.hosted else MAX_UPLOAD_MB
    gr.Markdown(
        "Prompts the student continues during training. `bundle` uses the embedded prompts; a hub dataset id or a "
        f"CSV/JSONL file (up to {upload_mb} MB) works too. Pick the column that holds the prompt text."
    )
    kind = gr.Radio(list(SOURCES), value="bundle", label="Source", elem_id="data-source")
    upload = gr.File(
        label="CSV, JSONL, JSON or TXT file", file_types=list(TABLE_SUFFIXES), visible=False, elem_id="data-upload"
    )
    controls = form.add_group("data", config)
    columns = gr.Dropdown(choices=[], label="Columns found", interactive=True, elem_id="data-columns")
    show = gr.Button("Preview", elem_id="data-preview-btn")
    status = gr.Markdown("", elem_id="data-status")
    table = gr.Dataframe(interactive=False, label="First rows", wrap=True, elem_id="data-preview")

    source, column = controls["dataset_name_or_path"], controls["prompt_column"]

    def on_kind(choice: str, current: str) -> tuple[Any, Any]:
        if choice == "bundle":
            return gr.update(visible=False), "bundle"
        if choice == "hub dataset":
            return gr.update(visible=False), "" if is_bundle(current) else current
        return gr.update(visible=True), gr.skip()

    kind.change(on_kind, inputs=[kind, source], outputs=[upload, source], queue=False)

    def show_preview(src: str, col: str, token: str | None, request: gr.Request) -> tuple[Any, str, Any]:
        try:
            names, rows, count, col = preview(ctx, src, col, ctx.owner_token(token, request.session_hash))
        except Exception as exc:  # a malformed file or a bad id is reported in words
            return gr.skip(), f"❌ {ctx.policy.redact(describe_exception(exc))}", None
        return gr.update(choices=names, value=col), f"✅ {count} prompts from column **{col}**.", rows

    def on_upload(file: Any, token: str | None, request: gr.Request) -> tuple[Any, Any, Any, str, Any]:
        if file is None:
            return gr.skip(), gr.skip(), gr.skip(), "", None
        token = ctx.owner_token(token, request.session_hash)
        try:
            kept, value = keep_upload(ctx, file if isinstance(file, str) else file.name, token)
            names, rows, count, col = preview(ctx, value, None, token)
        except Exception as exc:  # a malformed file is reported in words
            return gr.skip(), gr.skip(), gr.skip(), f"❌ {ctx.policy.redact(describe_exception(exc))}", None
        return (
            value,
            col,
            gr.update(choices=names, value=col),
            f"✅ {kept.name}: {count} prompts from column **{col}**.",
            rows,
        )

    upload.upload(
        on_upload,
        inputs=[upload, owner],
        outputs=[source, column, columns, status, table],
        api_name="upload_prompts",
        concurrency_limit=2,
    )
    columns.input(lambda c: c, inputs=columns, outputs=column, queue=False).then(
        show_preview, inputs=[source, column, owner], outputs=[columns, status, table]
    )
    show.click(
        show_preview,
        inputs=[source, column, owner],
        outputs=[columns, status, table],
        api_name="preview_prompts",
        concurrency_limit=2,
    )

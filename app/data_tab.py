"""Data tab: prompts from the bundle, a hub dataset, or an uploaded CSV/JSONL with a column picker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tnd_core.config import CustomPPOConfig
from tnd_core.errors import ConfigError

from app.context import AppContext
from app.forms import Form
from app.runner import describe_exception

MAX_UPLOAD_MB = 50
PREVIEW_ROWS = 8
SOURCES = ("bundle", "hub dataset", "uploaded file")


def uploads_dir() -> Path:
    root = Path(os.environ.get("TND_CACHE_DIR") or Path.home() / ".cache" / "tnd_studio")
    return root / "uploads"


def keep_upload(path: str) -> Path:
    """Copy an upload out of Gradio's temporary cache so a run can read it later; checks the size."""
    source = Path(path)
    size_mb = source.stat().st_size / 2**20
    if size_mb > MAX_UPLOAD_MB:
        raise ConfigError("dataset file", source.name, f"at most {MAX_UPLOAD_MB} MB (this one has {size_mb:.1f} MB)")
    if source.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise ConfigError("dataset file", source.name, "a .csv, .jsonl or .json file")
    target = uploads_dir() / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def preview(source: str, column: str) -> tuple[list[str], pd.DataFrame, int]:
    """Columns, the first rows and the number of prompts of a prompt source (bundle, hub id or file)."""
    from tnd_core.data.prompts import inspect_source

    return inspect_source(source, column, rows=PREVIEW_ROWS)


def build(ctx: AppContext, form: Form, config: CustomPPOConfig) -> None:
    """Create the tab's controls (the `data` option group), the upload, the column picker and the preview."""
    gr.Markdown(
        "Prompts the student continues during training. `bundle` uses the embedded prompts; a hub dataset id or a "
        f"CSV/JSONL file (up to {MAX_UPLOAD_MB} MB) works too. Pick the column that holds the prompt text."
    )
    kind = gr.Radio(list(SOURCES), value="bundle", label="Source", elem_id="data-source")
    upload = gr.File(label="CSV or JSONL file", file_types=[".csv", ".jsonl", ".json"], visible=False, elem_id="data-upload")
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
            return gr.update(visible=False), "" if current == "bundle" else current
        return gr.update(visible=True), gr.skip()

    kind.change(on_kind, inputs=[kind, source], outputs=[upload, source], queue=False)

    def show_preview(src: str, col: str) -> tuple[Any, str, Any]:
        try:
            names, rows, count = preview(src, col)
        except Exception as exc:  # a malformed file or a bad id is reported in words
            return gr.skip(), f"❌ {describe_exception(exc)}", None
        pick = col if col in names else gr.skip()
        return gr.update(choices=names, value=pick), f"✅ {count} prompts; column **{col}**.", rows

    def on_upload(file: Any, col: str) -> tuple[Any, Any, Any, str, Any]:
        if file is None:
            return gr.skip(), gr.skip(), gr.skip(), "", None
        try:
            kept = keep_upload(file if isinstance(file, str) else file.name)
            names, rows, count = preview(str(kept), col)
        except Exception as exc:  # a malformed file is reported in words
            return gr.skip(), gr.skip(), gr.skip(), f"❌ {describe_exception(exc)}", None
        chosen = col if col in names else names[0]
        return str(kept), chosen, gr.update(choices=names, value=chosen), f"✅ {kept.name}: {count} rows; prompts from column **{chosen}**.", rows

    upload.upload(on_upload, inputs=[upload, column], outputs=[source, column, columns, status, table])
    columns.input(lambda c: c, inputs=columns, outputs=column, queue=False)
    show.click(show_preview, inputs=[source, column], outputs=[columns, status, table])

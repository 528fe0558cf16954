"""Export tab: the latest checkpoint as a zip (and, for a LoRA run, its adapters or a merged model), the metrics
as CSV, the config as YAML, and push to the hub.

The metrics CSV has every logged step: it is read from the run's `metrics.jsonl`, not from the app's
in-memory history, which thins old steps to stay bounded.

The hub token is used for one call and never logged, stored or echoed back, even inside an error.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.context import AppContext
from app.forms import Form, errors_markdown
from app.runner import Snapshot
from app.services import CONFIG_FILE, write_config_file
from tnd_core.errors import ConfigError, TndError
from tnd_core.stats import EVAL_PREFIX

# the trainer's record of every step (tnd_core.trainers.ppo_trainer.metrics_log.METRICS_FILE; the app may
# not import the trainer's internals)
METRICS_FILE = "metrics.jsonl"
# what peft writes beside LoRA adapters (tnd_core.models.student.ADAPTER_CONFIG_FILE; named here so that
# importing the tab does not load torch)
ADAPTER_CONFIG_FILE = "adapter_config.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _step_of(path: Path) -> int:
    digits = re.findall(r"\d+", path.name)
    return int(digits[-1]) if digits else -1


def latest_checkpoint(snap: Snapshot, output_dir: str) -> Path:
    """The run's last checkpoint, or the newest `checkpoint-*` folder under `output_dir`."""
    if snap.checkpoint and Path(snap.checkpoint).is_dir():
        return Path(snap.checkpoint)
    root = Path(snap.config.output_dir if snap.config else output_dir)
    found = sorted((p for p in root.glob("checkpoint-*") if p.is_dir()), key=_step_of)
    if not found:
        raise TndError(f"No checkpoint yet under {root}: train (or stop a run, which saves one) first.")
    return found[-1]


def zip_checkpoint(folder: Path, name: str | None = None) -> str:
    """A zip of a folder (a checkpoint, its adapters, a merged model) named `name` (default: the folder's)
    in a fresh temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="tnd-export-")) / (name or folder.name)
    return shutil.make_archive(str(target), "zip", root_dir=folder)


def adapter_folder(checkpoint: Path) -> Path:
    """The LoRA adapters (with value head and tokenizer) of a checkpoint: its `student` folder, when the run
    trained adapters (use_lora)."""
    folder = checkpoint / "student"
    if not (folder / ADAPTER_CONFIG_FILE).is_file():
        raise TndError(
            f"{checkpoint.name} holds no LoRA adapters: its run trained every weight of the student "
            "(use_lora=false). Download the checkpoint instead."
        )
    return folder


def merged_model(checkpoint: Path) -> Path:
    """A full model from a LoRA checkpoint: its adapters merged into a copy of the base model, with the
    tokenizer and the value head, in a fresh temporary directory."""
    from tnd_core.models.student import merge_adapters

    target = Path(tempfile.mkdtemp(prefix="tnd-merged-")) / f"{checkpoint.name}-merged"
    return merge_adapters(adapter_folder(checkpoint), target)


def metrics_path(snap: Snapshot) -> Path | None:
    """The run's `metrics.jsonl`, or None when the run has no config or the file is missing."""
    if snap.config is None:
        return None
    path = Path(snap.config.output_dir) / METRICS_FILE
    return path if path.is_file() else None


def read_step_rows(path: Path) -> pd.DataFrame:
    """The step rows of a `metrics.jsonl` (evaluation rows left out), one per step in step order.

    A resumed run restarts the file from its checkpoint's copy; should a step still appear twice,
    its last row wins. A line cut short by a crash is skipped.
    """
    rows = []
    with open(path) as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "step" in row and not any(key.startswith(EVAL_PREFIX) for key in row):
                rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.drop_duplicates(subset="step", keep="last").sort_values("step", kind="stable")
    return frame[["step", *(c for c in frame.columns if c != "step")]].reset_index(drop=True)


def metrics_frame(snap: Snapshot) -> pd.DataFrame:
    """One row per logged step, one column per statistic: every step from the run's metrics.jsonl,
    or the store's kept points when the file is missing (e.g. a run function that writes none)."""
    path = metrics_path(snap)
    if path is not None:
        frame = read_step_rows(path)
        if not frame.empty:
            return frame
    return pd.DataFrame({"step": snap.steps, **snap.stats})


def write_metrics_csv(snap: Snapshot) -> tuple[str, int]:
    """The metrics as a CSV in a fresh temporary directory, and its number of rows."""
    frame = metrics_frame(snap)
    if frame.empty:
        raise TndError("No metrics yet: start a run first.")
    path = Path(tempfile.mkdtemp(prefix="tnd-metrics-")) / "metrics.csv"
    frame.to_csv(path, index=False)
    return str(path), len(frame)


def redact(text: str, secret: str) -> str:
    """`text` with every occurrence of `secret` hidden."""
    return text.replace(secret, "***") if secret else text


def push_to_hub(folder: Path, repo_id: str, token: str, private: bool) -> str:
    """Upload a checkpoint folder to a model repo; returns the repo URL. Errors never contain the token."""
    if not REPO_ID.match(repo_id or ""):
        raise ConfigError("repo_id", repo_id, "'user-or-org/name' (letters, digits, '_', '-', '.')")
    if not token:
        raise ConfigError("token", "", "a Hugging Face write token")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload TnD Studio checkpoint"
        )
    except Exception as exc:  # network, auth and offline errors become words, without the token
        raise TndError(redact(f"Push to {repo_id} failed: {type(exc).__name__}: {exc}", token)) from None
    return str(url)


def build(ctx: AppContext, form: Form) -> None:
    """Create the Export tab."""
    gr.Markdown("Download what the run produced, or push the latest checkpoint to the Hugging Face hub.")
    with gr.Row():
        zip_button = gr.Button("Latest checkpoint (zip)", elem_id="export-zip")
        csv_button = gr.Button("Metrics (CSV)", elem_id="export-csv")
        yaml_button = gr.Button("Config (YAML)", elem_id="export-yaml")
    with gr.Row():
        adapters_button = gr.Button("LoRA adapters (zip)", elem_id="export-adapters")
        merged_button = gr.Button("Merged model (zip)", elem_id="export-merged")
    files = gr.File(label="Download", interactive=False, elem_id="export-file")
    message = gr.Markdown("", elem_id="export-message")
    with gr.Accordion("Push to the hub", open=False):
        repo_id = gr.Textbox(label="Repository id", placeholder="your-name/tnd-student", max_lines=1)
        token = gr.Textbox(label="Write token (used once, never stored or shown)", type="password", max_lines=1)
        private = gr.Checkbox(label="Private repository", value=True)
        push = gr.Button("Push latest checkpoint")
        push_message = gr.Markdown("")

    output_dir = form.controls["output_dir"]

    def on_zip(out_dir: str) -> tuple[Any, str]:
        try:
            # in hosted mode output_dir is a run name: only a run under the runs root can be exported
            folder = latest_checkpoint(ctx.runner.store.snapshot(), str(ctx.policy.run_folder(out_dir)))
            return zip_checkpoint(folder), ctx.policy.redact(f"Zipped `{folder}`.")
        except TndError as exc:
            return None, f"❌ {ctx.policy.redact(str(exc))}"

    def on_adapters(out_dir: str, merge: bool) -> tuple[Any, str]:
        try:
            checkpoint = latest_checkpoint(ctx.runner.store.snapshot(), str(ctx.policy.run_folder(out_dir)))
            if merge:
                folder = merged_model(checkpoint)
                note = "the adapters merged into the base model; loads with from_pretrained"
            else:
                folder, note = adapter_folder(checkpoint), "adapters, value head and tokenizer"
            name = folder.name if merge else f"{checkpoint.name}-adapters"
            return zip_checkpoint(folder, name), ctx.policy.redact(f"Zipped `{checkpoint}`: {note}.")
        except (TndError, OSError) as exc:
            return None, f"❌ {ctx.policy.redact(str(exc))}"

    def on_csv() -> tuple[Any, str]:
        try:
            path, rows = write_metrics_csv(ctx.runner.store.snapshot())
            return path, f"{rows} logged steps."
        except TndError as exc:
            return None, f"❌ {exc}"

    def on_yaml(*values: Any) -> tuple[Any, str]:
        cfg, errors = form.read(values)
        if cfg is None:
            return None, f"❌ Fix the config first:\n{errors_markdown(errors)}"
        return write_config_file(cfg), f"Run it with `tnd train --config {CONFIG_FILE}`."

    def on_push(repo: str, secret: str, is_private: bool, out_dir: str) -> tuple[str, str]:
        try:
            folder = latest_checkpoint(ctx.runner.store.snapshot(), str(ctx.policy.run_folder(out_dir)))
            url = push_to_hub(folder, (repo or "").strip(), (secret or "").strip(), is_private)
        except TndError as exc:
            return f"❌ {ctx.policy.redact(redact(str(exc), (secret or '').strip()))}", ""
        return f"✅ Pushed `{folder.name}` to {url}", ""

    zip_button.click(on_zip, inputs=output_dir, outputs=[files, message], concurrency_limit=1)
    adapters_button.click(
        lambda out_dir: on_adapters(out_dir, False), inputs=output_dir, outputs=[files, message], concurrency_limit=1
    )
    # merging loads the base model: one at a time
    merged_button.click(
        lambda out_dir: on_adapters(out_dir, True), inputs=output_dir, outputs=[files, message], concurrency_limit=1
    )
    csv_button.click(on_csv, outputs=[files, message])
    yaml_button.click(on_yaml, inputs=form.components, outputs=[files, message])
    # the token box is cleared after each push so the secret does not linger in the page
    push.click(
        on_push, inputs=[repo_id, token, private, output_dir], outputs=[push_message, token], api_visibility="private"
    )
